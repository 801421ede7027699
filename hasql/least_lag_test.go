//go:build linux

package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/testcluster"
)

// least_lag follows the lag the checks measure, not the one its picker
// was built with, and counts the master (lag 0, known) among the readers
// when it takes reads (hasql_master_read_weight): a replica whose replay
// stopped after the last rebuild kept half the reads, and the master none.
func TestLeastLagFollowsLagAndMasterReads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n2 := c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "hasql_balancer", "least_lag",
		"hasql_master_read_weight", "1"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	require.Eventually(t, func() bool {
		return statusOf(m, "n2").LagKnown && statusOf(m, "n3").LagKnown
	}, 30*time.Second, 5*time.Millisecond)
	reads := func() map[string]int {
		served := map[string]int{}
		for range 300 {
			conn, err := m.AcquireReplica(ctx)
			require.NoError(t, err)
			served[nodeOf(c, conn)]++
			conn.Release()
		}
		return served
	}
	served := reads()
	require.NotZero(t, served["n1"], "the master, read weight 1, took no read: %v", served)

	require.NoError(t, n2.PauseReplay(ctx))
	_, err := m.Master().Exec(ctx, "CREATE TABLE big AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 40000) g")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		s2, s3 := statusOf(m, "n2"), statusOf(m, "n3")
		return s2.LagKnown && s2.LagBytes > 4<<20 && s3.LagKnown && s3.LagBytes < 64<<10
	}, 30*time.Second, 5*time.Millisecond, "%v", m.Nodes())
	// n3 takes reads once it is within least_lag's tolerances of the
	// master (1 MiB and 100ms; on a busy machine its replay of the table
	// may take a while); n2, paused megabytes behind, takes none meanwhile.
	waitUntil(t, ctx, "reads served by n3", func() bool {
		served = reads()
		require.Zero(t, served["n2"], "reads went to n2, %d bytes behind: %v", statusOf(m, "n2").LagBytes, served)
		return served["n3"] > 0
	})
}
