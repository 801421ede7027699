package failover_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
)

// fn commits with a batch whose COMMIT AND CHAIN is not the batch's last
// query, the commit's sync wait is cancelled, and fn goes on with one more
// statement: the commit is on the master alone, and RunInTx says so. The
// batch is read as one string; read query by query, the batch's next query
// took the COMMIT's place and read the flag of the statement before the
// batch, and RunInTx reported success.
func TestRunInTxSyncCancelInABatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	_, m, n1, stop, restore := syncStoppableCluster(t, ctx, "CREATE TABLE rvsync_t (n serial PRIMARY KEY, note text)")
	stop()
	cancelled := cancelSyncWaiter(ctx, n1, restore)
	var sawCancelled bool
	runs := 0
	err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
		runs++
		if _, err := tx.Exec(ctx, "INSERT INTO rvsync_t (note) VALUES ('a')"); err != nil {
			return err
		}
		b := &pgx.Batch{}
		b.Queue("COMMIT AND CHAIN")
		b.Queue("SELECT 1")
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		sawCancelled = hasql.SyncRepCancelled(tx.Conn())
		_, err := tx.Exec(ctx, "INSERT INTO rvsync_t (note) VALUES ('audit')")
		return err
	})
	require.NoError(t, <-cancelled)
	t.Logf("RunInTx: %v; runs %d; SyncRepCancelled right after the batch: %v", err, runs, sawCancelled)
	require.True(t, sawCancelled, "the sync wait was cancelled")
	assert.Equal(t, 1, runs)
	assert.ErrorIs(t, err, failover.ErrCommitUnknown, "a commit on the master alone reported as success")
	assert.ErrorIs(t, err, hasql.ErrSyncRepCancelled)
}
