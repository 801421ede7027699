//go:build linux

package hasql_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A discoverer's first set that lists an address twice makes one node of
// it, as a later set does; a node left outside the set by the next set
// would keep its checks and pool running even after Close.
func TestFirstSetListsAnAddressOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]

	d := newSetDiscoverer(
		discovery.Node{Addr: n1.Addr(), Tags: map[string]string{"zone": "a"}},
		discovery.Node{Addr: n1.Addr()},
		discovery.Node{Addr: n2.Addr()})
	m, err := hasql.New(ctx, withParams(c.DSN(), "application_name", "pgxha-firstset", "pool_min_conns", "2"),
		hasql.WithLogger(quiet), hasql.WithDiscoverer(d))
	require.NoError(t, err)
	closed := false
	defer func() {
		if !closed {
			m.Close()
		}
	}()
	assert.Equal(t, []string{n1.Addr(), n2.Addr()}, addrsOf(m), "the first set")
	// The first set's tags come with it, before any later set.
	assert.Equal(t, map[string]string{"zone": "a"}, m.Nodes()[0].Tags)
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	d.set(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr()})
	require.Eventually(t, func() bool { return len(m.Nodes()[0].Tags) == 0 }, 30*time.Second, 20*time.Millisecond)
	m.Close()
	closed = true

	conn, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	backends := func() int {
		var k int
		require.NoError(t, conn.QueryRow(ctx,
			`SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('pgxha-firstset', 'pgxha-check')`).Scan(&k))
		return k
	}
	require.Eventually(t, func() bool { return backends() == 0 }, 30*time.Second, 50*time.Millisecond,
		"after Close, n1 still has %d sessions of the Manager", backends())
}

// A member of the first set that ConfigureNode refuses is left out, as in
// any later set, instead of failing New.
func TestFirstSetLeavesOutARefusedMember(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hook := func(nc hasql.NodeConfig, _ *pgxpool.Config) error {
		if nc.Addr == "127.0.0.1:1" {
			return errors.New("refused")
		}
		return nil
	}
	d := newSetDiscoverer(discovery.Node{Addr: "127.0.0.1:2"}, discovery.Node{Addr: "127.0.0.1:1"})
	m, err := hasql.New(ctx, "postgres://u:pw@127.0.0.1:2/db?hasql_check_timeout=200ms",
		hasql.WithLogger(quiet), hasql.WithDiscoverer(d), hasql.WithConfigureNode(hook))
	require.NoError(t, err, "one refused member of the first set")
	defer m.Close()
	assert.Equal(t, []string{"127.0.0.1:2"}, addrsOf(m))

	// The connection string's own nodes still stop New when refused.
	_, err = hasql.New(ctx, "postgres://u:pw@127.0.0.1:1/db?hasql_check_timeout=200ms",
		hasql.WithLogger(quiet), hasql.WithConfigureNode(hook))
	require.ErrorContains(t, err, "refused")
}
