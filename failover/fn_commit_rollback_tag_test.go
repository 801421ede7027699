package failover_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/testcluster"
)

// fn's transaction failed (a statement's error swallowed), and fn sends
// COMMIT itself, which the server answers with the command tag ROLLBACK and
// no error. The RunInTx doc and docs/errors.md promise: "fn ... whose own
// COMMIT failed or was answered ROLLBACK (a failed transaction) and
// returned nil gets an error", through every pgx call that sends it
// (Exec, Query, QueryRow, a batch of it alone; through tx or tx.Conn()).
// Only tx.Exec's answer was read: through the others RunInTx reported
// success for a transaction of which nothing committed.
func TestRunInTxFnsCommitAnsweredRollbackIsAnErrorOnEveryPath(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := readyManager(t, ctx, c, 1, "CREATE TABLE rollback_tag (n serial PRIMARY KEY, note text)")
	count := noteCounter(t, ctx, m, "rollback_tag")
	for _, tc := range []struct {
		name   string
		commit func(ctx context.Context, tx pgx.Tx) (string, error)
	}{
		{"Exec (control)", func(ctx context.Context, tx pgx.Tx) (string, error) {
			ct, err := tx.Exec(ctx, "COMMIT")
			return ct.String(), err
		}},
		{"Query", func(ctx context.Context, tx pgx.Tx) (string, error) {
			rows, err := tx.Query(ctx, "COMMIT")
			if err != nil {
				return "", err
			}
			rows.Close()
			return rows.CommandTag().String(), rows.Err()
		}},
		{"SendBatch", func(ctx context.Context, tx pgx.Tx) (string, error) {
			b := &pgx.Batch{}
			b.Queue("COMMIT")
			br := tx.SendBatch(ctx, b)
			ct, err := br.Exec()
			if cerr := br.Close(); err == nil {
				err = cerr
			}
			return ct.String(), err
		}},
		{"QueryRow", func(ctx context.Context, tx pgx.Tx) (string, error) {
			err := tx.QueryRow(ctx, "COMMIT").Scan()
			if errors.Is(err, pgx.ErrNoRows) {
				err = nil // a COMMIT returns no row
			}
			return "", err // pgx.Row does not give the tag: the count of rows tells
		}},
		{"Conn Query", func(ctx context.Context, tx pgx.Tx) (string, error) {
			rows, err := tx.Conn().Query(ctx, "commit;")
			if err != nil {
				return "", err
			}
			rows.Close()
			return rows.CommandTag().String(), rows.Err()
		}},
	} {
		t.Run(tc.name+", answered COMMIT", func(t *testing.T) {
			// The transaction well: its COMMIT commits, RunInTx says so.
			note := tc.name + " well"
			var tag string
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 1}, func(ctx context.Context, tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "INSERT INTO rollback_tag (note) VALUES ($1)", note); err != nil {
					return err
				}
				var err error
				tag, err = tc.commit(ctx, tx)
				return err
			})
			require.NoError(t, err, "COMMIT's tag %q", tag)
			require.Equal(t, 1, count(note))
		})
		t.Run(tc.name, func(t *testing.T) {
			var tag string
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 1}, func(ctx context.Context, tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "INSERT INTO rollback_tag (note) VALUES ($1)", tc.name); err != nil {
					return err
				}
				_, _ = tx.Exec(ctx, "SELECT 1/0") // its error ignored: the transaction is aborted
				var err error
				tag, err = tc.commit(ctx, tx)
				return err
			})
			k := count(tc.name)
			t.Logf("RunInTx: %v; COMMIT's tag %q; rows committed: %d", err, tag, k)
			if tag != "" {
				require.Equal(t, "ROLLBACK", tag, "the server did not answer ROLLBACK: the test shows nothing")
			}
			require.Equal(t, 0, k)
			assert.Error(t, err, "RunInTx reported success; nothing committed")
		})
	}
}
