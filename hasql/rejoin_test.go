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

// A former master that rejoins (rewound) as a replica of the new one is
// not evidence of a newer timeline: the WAL position it had as the old
// master, on the old timeline, ahead of the new master's, must not be
// taken with the timeline it reports after the rewind. (Patroni rejoins a
// crashed leader so after every failover; with the two mixed, the new
// master was called stale and every write refused.)
func TestRejoinedMasterIsNoNewerTimeline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"), hasql.WithLogger(quiet))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	// n1 writes WAL that n2, stopped, never gets; the Manager sees n1's
	// position past it.
	require.NoError(t, n2.Stop())
	_, err = m.Master().Exec(ctx, "CREATE TABLE rejoin AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g")
	require.NoError(t, err)
	lsn, err := m.CurrentLSN(ctx)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return statusOf(m, "n1").LSN >= lsn }, 30*time.Second, 5*time.Millisecond)

	require.NoError(t, n1.Kill())
	require.NoError(t, n2.Start())
	require.NoError(t, c.Failover(ctx, n2))
	require.Eventually(t, func() bool { return m.Stat().Master == n2.Addr() }, 30*time.Second, 5*time.Millisecond)
	require.Less(t, statusOf(m, "n2").LSN, lsn, "the new master is behind what the old one wrote")

	require.NoError(t, c.Rejoin(ctx, n1))
	waitRole(t, m, "n1", hasql.RoleAsyncReplica)
	for i := 0; i < 20; i++ {
		opCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := m.Master().Exec(opCtx, "SELECT 1")
		cancel()
		require.NoError(t, err, "writes go to n2: %v", m.Nodes())
		time.Sleep(20 * time.Millisecond)
	}
	assert.Equal(t, n2.Addr(), m.Stat().Master)
	assert.False(t, statusOf(m, "n2").StaleMaster)
}
