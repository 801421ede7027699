package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/testcluster"
)

// TestReplicaRerunNeedsACheckAfterTheLoss: a statement is re-run only
// when the node that ran it could not have executed it (a replica). The
// routed statement waits on n2 (a replica) for an advisory lock, a check
// of n2 begins and ends (in recovery) while it waits, n2 is then promoted
// (rogue: n1 runs on, the Manager has not seen it), and the statement goes
// on in a new transaction (after COMMIT in the string), which on the
// promoted server writes: nextval. Its backend is terminated before the
// answer. The Querier took the check from before the promotion (one that
// began after the statement was sent) as the proof that n2 could not have
// written, ran the statement again, and nextval ran twice. The proof is
// now a check that began after the connection was lost.
func TestReplicaRerunNeedsACheckAfterTheLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, n2, m := sequenceOnReplica(t, ctx, "2s")

	holder, err := n2.Conn(ctx)
	require.NoError(t, err)
	defer holder.Close(context.Background())
	_, err = holder.Exec(ctx, "SELECT pg_advisory_lock(42)")
	require.NoError(t, err)
	admin, err := n2.Conn(ctx)
	require.NoError(t, err)
	defer admin.Close(context.Background())

	// Another reader keeps a connection of n2's pool warm (used within
	// the last second: handed out without a ping), as any busy service has.
	warmCtx, stopWarm := context.WithCancel(ctx)
	defer stopWarm()
	go func() {
		for warmCtx.Err() == nil {
			_, _ = m.Replica().Exec(warmCtx, "SELECT 1")
			time.Sleep(50 * time.Millisecond)
		}
	}()

	sent := time.Now()
	done := make(chan error, 1)
	go func() {
		rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
		defer rcancel()
		_, err := m.Replica().Exec(rctx, "SELECT pg_advisory_lock(42); COMMIT; SELECT nextval('s'), pg_sleep(30)")
		done <- err
	}()
	require.Eventually(t, func() bool {
		return lsnOn(t, ctx, n2, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT pg_advisory_lock(42); COMMIT%'") == 1
	}, 30*time.Second, 5*time.Millisecond, "the routed statement waits for the lock on n2")
	// Two checks of n2 end after the statement was sent: the second began
	// after it, and found n2 in recovery.
	first := time.Time{}
	require.Eventually(t, func() bool {
		st := statusOf(m, "n2")
		if first.IsZero() {
			if st.LastCheck.After(sent) {
				first = st.LastCheck
			}
			return false
		}
		return st.LastCheck.After(first)
	}, 30*time.Second, time.Millisecond)
	require.True(t, statusOf(m, "n2").Role.IsReplica())

	require.NoError(t, n2.Promote(ctx))
	_, err = holder.Exec(ctx, "SELECT pg_advisory_unlock(42)")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var called bool
		return admin.QueryRow(ctx, "SELECT is_called FROM s").Scan(&called) == nil && called
	}, 10*time.Second, time.Millisecond, "the statement's nextval ran on the promoted n2")
	var k int
	require.NoError(t, admin.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_advisory_lock(42); COMMIT%' AND pid <> pg_backend_pid()").Scan(&k))
	require.Equal(t, 1, k)
	err = <-done
	t.Logf("Exec: %v", err)
	var last int64
	require.NoError(t, admin.QueryRow(ctx, "SELECT last_value FROM s").Scan(&last))
	assert.EqualValues(t, 1, last, "nextval ran on the promoted n2 once; the routed statement was run again after its loss")
}

// TestReplicaCrashReadRunsAgain: a replica read lost when its replica
// crashes (and comes back as a replica) runs again: the crash ended the
// backend, and the check that proves the server could not have written is
// its last one before the crash (begun after the read was sent), or the
// first after the restart (in recovery on the same timeline). Requiring a
// check begun after the loss that finds the same server (for a server
// still there, see TestReplicaRerunNeedsACheckAfterTheLoss) left no proof.
func TestReplicaCrashReadRunsAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 0})
	n2 := c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "hasql_balancer", "first"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	done := make(chan error, 1)
	var who string
	go func() {
		done <- m.Replica().QueryRow(ctx, "SELECT current_setting('cluster_name') FROM pg_sleep(1.5) WHERE 'crashread' <> ''").Scan(&who)
	}()
	require.Eventually(t, func() bool {
		return lsnOn(t, ctx, n2, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%crashread%' AND pid <> pg_backend_pid()") == 1
	}, 30*time.Second, 5*time.Millisecond, "the read runs on n2 (balancer first)")
	// A check of n2 begins and ends while the read runs.
	sent := time.Now()
	require.Eventually(t, func() bool { return statusOf(m, "n2").LastCheck.After(sent.Add(150 * time.Millisecond)) }, 30*time.Second, time.Millisecond)
	require.NoError(t, n2.Kill())
	require.NoError(t, n2.Start())
	err := <-done
	t.Logf("read: %q, %v", who, err)
	assert.NoError(t, err, "the read lost in n2's crash was not run again on n3")
}
