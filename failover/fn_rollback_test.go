package failover_test

// pgx code commonly calls tx.Rollback on its error path, or defers it
// (pgx's own idiom: "defer tx.Rollback(ctx)"; a no-op after Commit): a
// rollback in fn commits nothing, so a loss before any COMMIT is still run
// again, and a transaction fn rolled back is not reported committed.

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/testcluster"
)

func TestRunInTxFnRollsBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1 := c.Nodes()[0]
	tr := &stmtEndTracer{}
	m := tracedManager(t, ctx, c, tr, "CREATE TABLE rollback_t (n serial PRIMARY KEY, note text)")
	count := func(t *testing.T, note string) int {
		var k int
		require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM rollback_t WHERE note = $1", note).Scan(&k))
		return k
	}

	// fn defers tx.Rollback and returns nil: the deferred rollback runs
	// before RunInTx commits, and nothing is committed. RunInTx says so
	// (it said success, and before that "commit outcome unknown").
	t.Run("deferred Rollback: nothing committed, and said", func(t *testing.T) {
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			defer tx.Rollback(ctx)
			_, err := tx.Exec(ctx, "INSERT INTO rollback_t (note) VALUES ('deferred')")
			return err
		})
		k := count(t, "deferred")
		t.Logf("RunInTx: %v; rows committed %d", err, k)
		assert.Equal(t, 0, k)
		require.Error(t, err, "RunInTx reported success for a transaction that did not commit")
		assert.Contains(t, err.Error(), "rolled its transaction back")
		assert.NotErrorIs(t, err, failover.ErrCommitUnknown)
	})

	// The master's session is lost under fn's second statement, before
	// any COMMIT; fn rolls back on its error path (or by a deferred
	// Rollback). Nothing committed: RunInTx should run fn again (NodeDown),
	// as it does when fn does not call Rollback (it reported
	// ErrCommitUnknown and gave up).
	for _, style := range []string{"error path", "deferred"} {
		t.Run("loss before COMMIT, Rollback on the "+style, func(t *testing.T) {
			note := "loss-" + strings.ReplaceAll(style, " ", "")
			var fired atomic.Bool
			hook := func(conn *pgx.Conn, sql string, err error) {
				if err == nil && strings.Contains(sql, note) && fired.CompareAndSwap(false, true) {
					terminateAndWait(t, ctx, n1, conn.PgConn().PID())
				}
			}
			tr.hook.Store(&hook)
			runs := 0
			var classes []failover.Class
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3, OnRetry: func(_ int, _ error, c failover.Class, _ time.Duration) {
				classes = append(classes, c)
			}}, func(ctx context.Context, tx pgx.Tx) error {
				runs++
				if style == "deferred" {
					defer tx.Rollback(ctx)
				}
				if _, err := tx.Exec(ctx, "INSERT INTO rollback_t (note) VALUES ('"+note+"')"); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, "UPDATE rollback_t SET note = note WHERE note = '"+note+"'"); err != nil {
					if style == "error path" {
						_ = tx.Rollback(ctx)
					}
					return err
				}
				return nil
			})
			tr.hook.Store(nil)
			require.True(t, fired.Load())
			k := count(t, note)
			t.Logf("RunInTx: %v; runs %d; retried as %v; rows committed %d", err, runs, classes, k)
			assert.NotErrorIs(t, err, failover.ErrCommitUnknown, "reported in doubt, though the loss came before any COMMIT")
			assert.Equal(t, 2, runs, "RunInTx did not run fn again after a loss before COMMIT")
		})
	}

	// Control: the same loss without a Rollback in fn is retried.
	t.Run("control: loss before COMMIT, no Rollback", func(t *testing.T) {
		note := "loss-control"
		var fired atomic.Bool
		hook := func(conn *pgx.Conn, sql string, err error) {
			if err == nil && strings.Contains(sql, note) && fired.CompareAndSwap(false, true) {
				terminateAndWait(t, ctx, n1, conn.PgConn().PID())
			}
		}
		tr.hook.Store(&hook)
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if _, err := tx.Exec(ctx, "INSERT INTO rollback_t (note) VALUES ('"+note+"')"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "UPDATE rollback_t SET note = note WHERE note = '"+note+"'")
			return err
		})
		tr.hook.Store(nil)
		t.Logf("RunInTx: %v; runs %d; rows committed %d", err, runs, count(t, note))
		assert.NoError(t, err)
		assert.Equal(t, 2, runs)
	})

	// A ROLLBACK fn sends through tx is read twice (pgx's tracer, and the
	// wire): read again after the transaction ended, it still commits
	// nothing, and a serialization failure after it runs fn again.
	for _, how := range []string{"Exec", "PgConn"} {
		t.Run("ROLLBACK by "+how+" then 40001 runs fn again", func(t *testing.T) {
			note := "rb40001-" + how
			runs := 0
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
				runs++
				if _, err := tx.Exec(ctx, "INSERT INTO rollback_t (note) VALUES ($1)", note); err != nil {
					return err
				}
				if runs > 1 {
					return nil
				}
				var err error
				if how == "Exec" {
					_, err = tx.Exec(ctx, "ROLLBACK")
				} else {
					_, err = tx.Conn().PgConn().Exec(ctx, "ROLLBACK").ReadAll()
				}
				if err != nil {
					return err
				}
				return &pgconn.PgError{Code: "40001", Message: "could not serialize access"}
			})
			t.Logf("RunInTx: %v; runs %d; rows committed %d", err, runs, count(t, note))
			assert.NoError(t, err)
			assert.Equal(t, 2, runs, "a rollback read twice was taken for a commit")
			assert.Equal(t, 1, count(t, note))
		})
	}
}
