package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// n2's replay is paused, a row is committed on n1, and the Manager (checks
// every 2s, hasql_max_lag=1s) sees n1 with WAL n2 has not replayed. From
// then on n2's lag is at least the time since that check of n1: once that
// passes 1s, n2 must not count as within the limit, and no plain read may
// be served by it without the row. n1 answers 60ms slower a round trip, so
// that at each tick its check ends after n2's, as on a master busier than
// its replica.
func TestPausedReplicaPastTheLagLimitServesNoReads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	execOn(t, ctx, n1, "CREATE TABLE pending (v int)")
	const limit = time.Second
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "2s", "hasql_max_lag", "1s"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	require.Eventually(t, func() bool {
		s1, s2 := statusOf(m, "n1"), statusOf(m, "n2")
		return s2.LagKnown && s2.LagBytes == 0 && s2.LSN >= s1.LSN && s1.LSN > 0
	}, 30*time.Second, 10*time.Millisecond, "n2 in step")

	// Pause n2's replay where the master stands: nothing pending.
	rc, err := n2.Conn(ctx)
	require.NoError(t, err)
	defer rc.Close(context.Background())
	mc, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer mc.Close(context.Background())
	var paused hasql.LSN
	require.Eventually(t, func() bool {
		require.NoError(t, n2.ResumeReplay(ctx))
		var masterAt string
		require.NoError(t, mc.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&masterAt))
		require.Eventually(t, func() bool {
			var replayed bool
			return rc.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", masterAt).Scan(&replayed) == nil && replayed
		}, 10*time.Second, 5*time.Millisecond)
		require.NoError(t, n2.PauseReplay(ctx))
		require.Eventually(t, func() bool {
			var state string
			return rc.QueryRow(ctx, "SELECT pg_get_wal_replay_pause_state()").Scan(&state) == nil && state == "paused"
		}, 10*time.Second, 5*time.Millisecond, "n2's replay paused")
		var at, now string
		require.NoError(t, rc.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text").Scan(&at))
		require.NoError(t, mc.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&now))
		p, err := hasql.ParseLSN(at)
		require.NoError(t, err)
		q, err := hasql.ParseLSN(now)
		require.NoError(t, err)
		paused = p
		return p >= q
	}, 30*time.Second, 10*time.Millisecond, "n2 paused with nothing pending")
	// The Manager sees both there, n2 in step.
	require.Eventually(t, func() bool {
		s1, s2 := statusOf(m, "n1"), statusOf(m, "n2")
		return s1.LSN == paused && s2.LSN == paused && s2.LagKnown && s2.LagBytes == 0
	}, 30*time.Second, 5*time.Millisecond, "the Manager sees n2 paused in step")
	// As after any quiet spell: the walsender, n2 having replayed all it
	// was sent, no longer shows a replay_lag.
	require.Eventually(t, func() bool {
		var cleared bool
		return mc.QueryRow(ctx, "SELECT replay_lag IS NULL FROM pg_stat_replication WHERE application_name = 'n2'").Scan(&cleared) == nil && cleared
	}, 90*time.Second, 50*time.Millisecond, "n1's walsender shows no replay_lag for n2")
	require.NoError(t, n1.SetLatency(30*time.Millisecond))
	defer n1.SetLatency(0)

	execOn(t, ctx, n1, "INSERT INTO pending VALUES (1)")
	committed := time.Now()

	var pendingSince time.Time // n1's first check seen with WAL n2 lacks
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var s1, s2 hasql.NodeStatus
		for _, st := range m.Nodes() {
			switch st.Name {
			case "n1":
				s1 = st
			case "n2":
				s2 = st
			}
		}
		if pendingSince.IsZero() && s1.Role == hasql.RoleMaster && s1.LSN > paused {
			pendingSince = s1.LastCheck
			t.Logf("n1 checked at %s with WAL n2 lacks (n1 at %s, n2 paused at %s)", pendingSince.Format("15:04:05.000"), s1.LSN, paused)
		}
		if !pendingSince.IsZero() && s2.Role.IsReplica() && s2.LagKnown && s2.LagBytes > 0 {
			if s2.Lag > limit {
				t.Logf("n2's lag %v measured at %s: over the limit", s2.Lag, s2.LagAt.Format("15:04:05.000"))
				return
			}
			if proven := s2.LagAt.Sub(pendingSince); proven > limit {
				// The Manager knew n2 was more than the limit behind
				// when it measured it: see what a read gets.
				short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
				var rows int
				var inRecovery bool
				rerr := m.Replica().QueryRow(short, "SELECT count(*), pg_is_in_recovery() FROM pending").Scan(&rows, &inRecovery)
				cancelShort()
				t.Fatalf("n2 (replay paused, %d bytes behind) measured at %s with lag %v known, %v after n1's check showed WAL it lacks (limit %v); "+
					"a plain read %v after the commit: rows=%d in_recovery=%v err=%v",
					s2.LagBytes, s2.LagAt.Format("15:04:05.000"), s2.Lag, proven, limit, time.Since(committed).Round(time.Millisecond), rows, inRecovery, rerr)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("n2's lag never went over the limit in 30s: %+v", statusOf(m, "n2"))
}
