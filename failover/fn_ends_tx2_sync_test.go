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

// fn commits with COMMIT AND CHAIN through tx.Conn() (seen by the watch:
// fn is not run again), the commit's wait for the synchronous standby is
// cancelled (committed on the master alone), and fn goes on in the chained
// transaction, which RunInTx commits. The cancelled wait is read only from
// the connection's last statement: RunInTx reports success.
func TestRunInTxSyncCancelAfterACommitAndChain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	_, m, n1, stop, restore := syncStoppableCluster(t, ctx, "CREATE TABLE syncchain_t (n serial PRIMARY KEY, note text)")
	for _, tc := range []struct {
		name   string
		commit func(ctx context.Context, tx pgx.Tx) error
	}{
		{"tx.Conn().Exec COMMIT AND CHAIN", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Conn().Exec(ctx, "COMMIT AND CHAIN")
			return err
		}},
		{"tx.Query COMMIT AND CHAIN", func(ctx context.Context, tx pgx.Tx) error {
			rows, err := tx.Query(ctx, "COMMIT AND CHAIN")
			if err != nil {
				return err
			}
			rows.Close()
			return rows.Err()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stop()
			cancelled := cancelSyncWaiter(ctx, n1, restore)
			var sawCancelled bool
			runs := 0
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
				runs++
				if _, err := tx.Exec(ctx, "INSERT INTO syncchain_t (note) VALUES ($1)", tc.name); err != nil {
					return err
				}
				if err := tc.commit(ctx, tx); err != nil {
					return err
				}
				sawCancelled = hasql.SyncRepCancelled(tx.Conn())
				_, err := tx.Exec(ctx, "INSERT INTO syncchain_t (note) VALUES ($1)", tc.name+" audit")
				return err
			})
			require.NoError(t, <-cancelled)
			t.Logf("RunInTx: %v; runs %d; SyncRepCancelled right after fn's commit: %v", err, runs, sawCancelled)
			require.True(t, sawCancelled, "the sync wait was cancelled")
			assert.Equal(t, 1, runs)
			assert.ErrorIs(t, err, failover.ErrCommitUnknown, "a commit on the master alone reported as success")
			assert.ErrorIs(t, err, hasql.ErrSyncRepCancelled)
		})
	}
}
