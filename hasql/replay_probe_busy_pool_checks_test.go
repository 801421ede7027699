package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestMinLSNReadsOnABusyReplicaPoolDoNotDriveChecks: the replica's pool
// is busy (its one connection held by a long read), and reads ask for a
// position its last check does not show, falling back to the master
// after a short wait. Each read's probe finds no connection free in time:
// the replica is asked for a check at most once per check interval, not
// once per read. The replica's replay is paused, so that no check it is
// asked for can show it at a read's position: a read routed straight to
// its pool would wait there for the held connection.
func TestMinLSNReadsOnABusyReplicaPoolDoNotDriveChecks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	execOn(t, ctx, n1, "CREATE TABLE notes (id int)")
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "10m", "pool_max_conns", "1"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	waitServesWithKnownLag(t, ctx, m, n2)
	require.NoError(t, n2.PauseReplay(ctx))
	held, err := m.AcquireReplica(ctx)
	require.NoError(t, err)
	defer held.Release()
	const reads = 30
	checks := checksDuringWrites(t, ctx, m, n2, reads, func(i int, lsn hasql.LSN) {
		var n int
		require.NoError(t, m.Replica(hasql.MinLSN(lsn), hasql.MinLSNWait(20*time.Millisecond), hasql.FallbackToMaster()).
			QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n))
		require.Equal(t, i+1, n)
		time.Sleep(20 * time.Millisecond) // a check asked for has time to run
		require.Less(t, statusAt(m, n2).LSN, lsn, "n2 replayed with its replay paused")
	})
	if checks > reads/3 {
		t.Fatalf("n2 was checked again after %d of %d MinLSN reads, with a check interval of ten minutes: reads drive its checks (failed acquires from its pool: %d)",
			checks, reads, nodeAcquireErrors(m, n2))
	}
	t.Logf("n2 checked again after %d of %d reads", checks, reads)
}

func nodeAcquireErrors(m *hasql.Manager, n *testcluster.Node) int64 {
	for _, st := range m.Stat().Nodes {
		if st.Addr == n.Addr() {
			return st.AcquireErrors
		}
	}
	return -1
}
