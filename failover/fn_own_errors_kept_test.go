package failover_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/testcluster"
)

// errSideCall is fn's error from a call of its own to another service.
type errSideCall struct{ err error }

func (e *errSideCall) Error() string { return "side call: " + e.err.Error() }
func (e *errSideCall) Unwrap() error { return e.err }

// fn's own errors, from connections or calls that are not its
// transaction's, while the transaction's connection is open and its
// transaction not failed. RunInTx's doc: "An error of fn that is not about
// the cluster (its own errors, ...) is returned as it is, after a rollback:
// a network error or an EOF while the transaction's connection is still
// open (a call to another service) is fn's own"; docs/errors.md: "An error
// from another connection of fn's ... is fn's and returned as it is".
func TestRunInTxFnsOwnErrorsFromOtherConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := readyManager(t, ctx, c, 1, "CREATE TABLE own_audit (n serial PRIMARY KEY, note text)")

	// A side connection of fn's (a plain *pgx.Conn, to another service)
	// that an earlier failure closed: its next statement fails with
	// "conn closed", which pgconn calls SafeToRetry (nothing was sent on
	// THAT connection; a socket the peer reset gives the same kind, a
	// write of nothing). RunInTx classifies it SafeToRetry and runs fn
	// again, MaxAttempts times, repeating fn's committed audit write each
	// time, and returns a *failover.Error instead of fn's error.
	t.Run("SafeToRetry error of a closed side connection", func(t *testing.T) {
		other, err := pgx.Connect(ctx, c.DSN())
		require.NoError(t, err)
		require.NoError(t, other.Close(ctx))
		runs := 0
		err = failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if _, err := m.Master().Exec(ctx, "INSERT INTO own_audit (note) VALUES ('closed side conn')"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
				return err
			}
			if _, err := other.Exec(ctx, "SELECT 1"); err != nil {
				return &errSideCall{err}
			}
			return nil
		})
		var k int
		require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM own_audit WHERE note = 'closed side conn'").Scan(&k))
		var fe *failover.Error
		var side *errSideCall
		t.Logf("RunInTx: %v (SafeToRetry %v); runs %d; audit rows %d", err, pgconn.SafeToRetry(err), runs, k)
		assert.Equal(t, 1, runs, "fn ran again for another connection's error")
		assert.Equal(t, 1, k, "fn's committed audit write was repeated")
		assert.False(t, errors.As(err, &fe), "fn's own error came back as a *failover.Error: %v", err)
		_, isSide := err.(*errSideCall)
		assert.True(t, isSide && errors.As(err, &side), "fn's own error not returned as it is: %T %v", err, err)
	})

	// fn's call to another service ends by a deadline of fn's own (not
	// RunInTx's ctx, which is fine). fn's error comes back wrapped in a
	// *failover.Error of class Permanent (errors.Is(err,
	// failover.ErrPermanent)), not as it is: RunInTx wraps any error that
	// matches context.DeadlineExceeded/Canceled, whoever's context it was.
	t.Run("deadline of fn's own call", func(t *testing.T) {
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
				return err
			}
			cctx, ccancel := context.WithTimeout(ctx, time.Millisecond)
			defer ccancel()
			<-cctx.Done() // a call to another service that timed out
			return &errSideCall{fmt.Errorf("calling the ledger: %w", cctx.Err())}
		})
		t.Logf("RunInTx: %T %v; ctx.Err %v", err, err, ctx.Err())
		require.NoError(t, ctx.Err())
		_, isSide := err.(*errSideCall)
		assert.True(t, isSide, "fn's own error not returned as it is: %T %v", err, err)
		assert.False(t, errors.Is(err, failover.ErrPermanent), "fn's own error classified by RunInTx: %v", err)
	})
	// fn cancels one statement of its transaction with a context of its
	// own (a request the client gave up on), on a healthy master. pgx's
	// default DeadlineContextWatcherHandler closes the connection;
	// RunInTx's ctx is fine. The cancel is fn's: Permanent, not run again
	// (it was NodeDown, and fn ran MaxAttempts times). A deadline of fn's
	// own is NodeDown: a hung master looks the same
	// (TestRunInTxHungMasterCutByFnsOwnStatementTimeoutIsRetried).
	t.Run("statement cancelled by fn", func(t *testing.T) {
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			sctx, scancel := context.WithCancel(ctx)
			defer scancel()
			time.AfterFunc(200*time.Millisecond, scancel)
			_, err := tx.Exec(sctx, "SELECT pg_sleep(3)")
			return err
		})
		t.Logf("RunInTx: %T %v; runs %d; ctx.Err %v", err, err, runs, ctx.Err())
		require.NoError(t, ctx.Err())
		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, 1, runs, "fn ran again after it cancelled its own statement")
		assert.False(t, errors.Is(err, failover.ErrNodeDown), "a statement fn cancelled is called node down: %v", err)
	})
}
