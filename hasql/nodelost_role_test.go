//go:build linux

package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A routed write that waited for a master (none while the old one was
// down) and was lost on the new one says it was lost on the master: the
// role is what the node was when the statement was sent, not before the
// acquire's wait, or a handler that re-runs work lost on a replica would
// run this write again.
func TestNodeLostRoleOfAWriteThatWaitedForTheMaster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	_, err := m.Master().Exec(ctx, "CREATE TABLE t (id int)")
	require.NoError(t, err)

	require.NoError(t, n1.Kill())
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, 30*time.Second, 5*time.Millisecond)

	execErr := make(chan error, 1)
	go func() {
		// Waits for a master, then writes and stays in flight.
		_, err := m.Master().Exec(ctx, "INSERT INTO t VALUES (1); SELECT pg_sleep(60)")
		execErr <- err
	}()
	require.NoError(t, c.Failover(ctx, n2))
	admin, err := n2.Conn(ctx)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var k int
		return admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO t VALUES (1)%'").Scan(&k) == nil && k == 1
	}, 30*time.Second, 5*time.Millisecond, "the write never reached the new master")
	admin.Close(ctx)
	require.NoError(t, n2.Kill())

	err = <-execErr
	var le *hasql.NodeLostError
	require.ErrorAs(t, err, &le, "%v", err)
	assert.True(t, le.MayHaveRun)
	assert.Equal(t, n2.Addr(), le.Addr)
	assert.Equal(t, hasql.RoleMaster, le.Role, "the write ran on n2 as master: %v", err)
}
