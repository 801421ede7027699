package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// The pool's sessions run as a role without pg_read_all_stats (the
// connection string's options set role=app_reader, which the check
// connection, with session settings of its own, does not take): on them
// pg_stat_wal_receiver hides received_tli, while the checks, as the login
// user, see the replica's walreceiver. Reads that ask the replica how far
// it replayed (WaitReplayed, MinLSN) do not make the cluster's checks run
// at the rate of those reads: with a check interval of ten minutes, a
// series of waits and reads is not followed by a check of the replica
// after each.
func TestReplayQuestionsOfSessionRoleDoNotDriveChecks(t *testing.T) {
	for _, how := range []string{"WaitReplayed", "MinLSN"} {
		t.Run(how, func(t *testing.T) { replayQuestionsDoNotDriveChecks(t, how) })
	}
}

func replayQuestionsDoNotDriveChecks(t *testing.T, how string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	execOn(t, ctx, n1, "CREATE ROLE app_reader NOLOGIN", "CREATE TABLE notes (id int)", "GRANT SELECT, INSERT ON notes TO app_reader")
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "10m", "options", "-crole=app_reader"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	var role string
	require.NoError(t, m.Replica().QueryRow(ctx, "SELECT current_user").Scan(&role))
	require.Equal(t, "app_reader", role, "the pool's sessions run as app_reader")
	waitServesWithKnownLag(t, ctx, m, n2)
	const reads = 30
	checks := checksDuringWrites(t, ctx, m, n2, reads, func(i int, lsn hasql.LSN) {
		switch how {
		case "WaitReplayed":
			require.NoError(t, m.WaitReplayed(ctx, lsn))
		case "MinLSN":
			replayedOn(t, ctx, n2, lsn)
			var n int
			require.NoError(t, m.Replica(hasql.MinLSN(lsn)).QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n))
			require.Equal(t, i+1, n)
		}
	})
	// The first checks after the start may still come (a node's check
	// asks for the others' when it changed): a few, not one per read.
	if checks > reads/3 {
		t.Fatalf("n2 was checked again after %d of %d %s calls, with a check interval of ten minutes: reads drive its checks", checks, reads, how)
	}
	t.Logf("n2 checked again after %d of %d %s calls", checks, reads, how)
}

// waitServesWithKnownLag waits until n serves reads as a replica whose lag
// is known.
func waitServesWithKnownLag(t *testing.T, ctx context.Context, m *hasql.Manager, n *testcluster.Node) {
	t.Helper()
	waitUntil(t, ctx, n.Name()+" serves reads with a known lag", func() bool {
		st := statusAt(m, n)
		return (st.Role == hasql.RoleAsyncReplica || st.Role == hasql.RoleSyncReplica || st.Role == hasql.RoleReplica) && st.LagKnown
	})
}

// checksDuringWrites inserts row i into notes on the master reads times,
// calls read with i and the master's position after the insert, and
// returns after how many of the reads n had been checked again.
func checksDuringWrites(t *testing.T, ctx context.Context, m *hasql.Manager, n *testcluster.Node, reads int, read func(i int, lsn hasql.LSN)) int {
	t.Helper()
	last, checks := statusAt(m, n).LastCheck, 0
	for i := range reads {
		_, err := m.Master().Exec(ctx, "INSERT INTO notes VALUES ($1)", i)
		require.NoError(t, err)
		lsn, err := m.CurrentLSN(ctx)
		require.NoError(t, err)
		read(i, lsn)
		if st := statusAt(m, n); !st.LastCheck.Equal(last) {
			last = st.LastCheck
			checks++
		}
	}
	return checks
}
