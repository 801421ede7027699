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

// fn writes, rolls its transaction back, then sends a lone COMMIT (or END).
// The server answers that COMMIT "COMMIT" with the warning "there is no
// transaction in progress": it commits nothing, and RunInTx does not take
// that answer for the commit of fn's transaction: fn gets the error of a
// rollback, not success.
func TestRunInTxRollbackThenLoneCommitIsNotSuccess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := readyManager(t, ctx, c, 1, "CREATE TABLE rb_then_commit (note text)")
	count := noteCounter(t, ctx, m, "rb_then_commit")
	for _, tc := range []struct {
		name     string
		rollback bool // a ROLLBACK statement through tx.Exec, not tx.Rollback (after which pgx refuses tx's own calls)
		commit   func(ctx context.Context, tx pgx.Tx) error
	}{
		{"tx.Conn().Exec COMMIT", false, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Conn().Exec(ctx, "COMMIT")
			return err
		}},
		{"tx.Query END", true, func(ctx context.Context, tx pgx.Tx) error {
			rows, err := tx.Query(ctx, "END")
			if err != nil {
				return err
			}
			rows.Close()
			return rows.Err()
		}},
		// Through tx.Exec (fnTx.after reads the tag): the same, and
		// older than the answer watch (8989a59 fails it too).
		{"tx.Exec COMMIT after a ROLLBACK statement", true, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "COMMIT")
			return err
		}},
		{"tx.Conn().QueryRow COMMIT", false, func(ctx context.Context, tx pgx.Tx) error {
			err := tx.Conn().QueryRow(ctx, "COMMIT").Scan()
			if err == pgx.ErrNoRows {
				err = nil
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 1}, func(ctx context.Context, tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "INSERT INTO rb_then_commit VALUES ($1)", tc.name); err != nil {
					return err
				}
				if tc.rollback {
					if _, err := tx.Exec(ctx, "ROLLBACK"); err != nil {
						return err
					}
				} else if err := tx.Rollback(ctx); err != nil {
					return err
				}
				return tc.commit(ctx, tx)
			})
			written := count(tc.name)
			t.Logf("RunInTx: %v; rows written: %d", err, written)
			require.Equal(t, 0, written, "the rollback undid the insert")
			assert.Error(t, err, "RunInTx reported success, yet nothing fn wrote committed (its COMMIT came after its ROLLBACK)")
		})
	}
}
