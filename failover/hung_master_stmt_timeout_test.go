package failover_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/testcluster"
)

// The master hangs (SIGSTOP) under fn's statement, and fn bounds each
// statement with a timeout of its own (RunInTx's ctx has minutes left);
// a replica is promoted. The statement's deadline closes the transaction's
// connection (pgconn's deadline watcher): nothing of the transaction can
// commit, and a new master takes it. RunInTx runs fn again there: a
// statement's own deadline on a closed connection is NodeDown (a hung
// master and a slow statement look alike), only a cancel of fn's own is
// Permanent.
func TestRunInTxHungMasterCutByFnsOwnStatementTimeoutIsRetried(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := readyManager(t, ctx, c, 1, "CREATE TABLE hung_stmt (id int PRIMARY KEY)")
	defer func() { _ = n1.Resume() }()

	runs := 0
	var failoverDone chan error
	err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 20, OnRetry: func(a int, err error, cl failover.Class, w time.Duration) { t.Logf("retry %d: %v (%v)", a, err, cl) }}, func(ctx context.Context, tx pgx.Tx) error {
		runs++
		if runs == 1 {
			require.NoError(t, n1.Pause())
		}
		sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer scancel()
		_, err := tx.Exec(sctx, "INSERT INTO hung_stmt VALUES ($1)", runs)
		if runs == 1 {
			// The statement's own deadline cut it (the failover comes
			// after, as an orchestrator's does: seconds later).
			failoverDone = make(chan error, 1)
			go func() { failoverDone <- c.Failover(ctx, n2) }()
		}
		return err
	})
	if failoverDone != nil {
		require.NoError(t, <-failoverDone)
	}
	t.Logf("RunInTx after %d runs: %v", runs, err)
	assert.NoError(t, err, "a transaction on a hung master, cut by fn's own per-statement timeout (RunInTx's ctx fine), was not run again on the new master")
	assert.GreaterOrEqual(t, runs, 2)
}
