package hasql_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestAcquireWaitsForTheNextMasterAfterTheMastersPoolFailed: an acquire
// picks the master, whose server then stops (a switchover's shutdown:
// Patroni's old leader refuses connections while it writes its shutdown
// checkpoint); its new connection fails, and by then the checks have found
// the master down and no node is master. The acquire must wait for the next
// master, as an acquire that found none does, not fail a check timeout
// later: the failure belongs to a view that is gone. (It used to give up
// when no other view came within the check timeout, so a promotion slower
// than that failed writes that were not in flight.) The next master is the
// same server started again: the only node, whose checks change nothing
// while it is down.
func TestAcquireWaitsForTheNextMasterAfterTheMastersPoolFailed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]
	const checkTimeout = 300 * time.Millisecond

	// The first pool connection made once armed waits at the gate, before
	// it dials: the acquire has picked the master by then.
	var armed atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	cfg, err := hasql.ParseConfig(withParams(c.DSN(), "hasql_check_interval", "5s",
		"hasql_check_timeout", checkTimeout.String(), "pool_min_conns", "0", "pool_max_conns", "4"))
	require.NoError(t, err)
	cfg.Logger = quiet
	cfg.PoolConfig.BeforeConnect = func(ctx context.Context, _ *pgx.ConnConfig) error {
		if !armed.CompareAndSwap(true, false) {
			return nil
		}
		close(entered)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	require.Equal(t, n1.Addr(), m.Stat().Master)

	// Hold the pool's connection: the next acquire makes one.
	held, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	defer held.Release()

	armed.Store(true)
	type result struct {
		who string
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		conn, err := m.AcquireMaster(ctx)
		if err != nil {
			r.err = err
		} else {
			r.err = conn.QueryRow(ctx, "SELECT current_setting('cluster_name')").Scan(&r.who)
			conn.Release()
		}
		done <- r
	}()
	select {
	case <-entered:
	case r := <-done:
		t.Fatalf("the acquire ended before it made a connection: who=%q err=%v", r.who, r.err)
	}
	require.NoError(t, n1.Stop())
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, time.Minute, 5*time.Millisecond,
		"the checks find the master down: %v", m.Nodes())
	close(release) // the connection is refused

	// A master back later than the check timeout.
	select {
	case r := <-done:
		t.Fatalf("the acquire ended while no node was master: who=%q err=%v", r.who, r.err)
	case <-time.After(3 * checkTimeout):
	}
	require.NoError(t, n1.Start())
	r := <-done
	require.NoError(t, r.err, "the acquire waits for the next master: %v", m.Nodes())
	require.Equal(t, "n1", r.who)
}
