package failover_test

// A routed write on the master (m.Master().Exec, autocommit) whose caller's
// deadline ends while its commit waits for the synchronous standby, on a
// master that stays healthy: the commit is on the master's disk and stands.
// failover.Classify should not call that error retryable ("node down: the
// transaction did not commit"): the write's outcome is unknown, like a
// COMMIT whose answer was lost (docs/failover.md: "a COMMIT waiting for a
// synchronous replica whose connection pgx closed commits once the replica
// answers").

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

func TestRoutedWriteCutByItsDeadlineIsNotRetryable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1, SyncReplicas: 1})
	n2 := c.Nodes()[1]
	m := readyManager(t, ctx, c, 1, "CREATE TABLE routed_deadline (n int)")

	// The synchronous standby stops receiving WAL (as in
	// TestRunInTxSyncWaitCancelledIsCommitUnknown).
	stopReceiving(t, ctx, n2)

	sctx, scancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err := m.Master().Exec(sctx, "INSERT INTO routed_deadline VALUES (1)")
	scancel()
	require.Error(t, err)
	var le *hasql.NodeLostError
	isLost := false
	if e, ok := err.(*hasql.NodeLostError); ok {
		le, isLost = e, true
	}
	var k int
	require.Eventually(t, func() bool {
		return m.Master().QueryRow(ctx, "SELECT count(*) FROM routed_deadline").Scan(&k) == nil && k == 1
	}, 10*time.Second, 50*time.Millisecond, "the write did not commit: the test shows nothing")
	class := failover.Classify(err)
	t.Logf("err: %v (%T, NodeLostError %v %+v); rows committed on the master: %d; Classify: %v (retryable %v); ClassifyCommit: %v",
		err, err, isLost, le, k, class, class.Retryable(), failover.ClassifyCommit(err))
	assert.False(t, class.Retryable(), "a routed autocommit write that committed is classified %q: retryable, 'the transaction did not commit'", class)
}
