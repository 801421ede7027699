package failover

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// sideConnClosed stands for pgconn's "conn closed" lock error of another
// connection of fn's (a *pgx.Conn that an earlier failure closed): it says
// SafeToRetry, as pgconn's does, for THAT connection.
type sideConnClosed struct{}

func (sideConnClosed) Error() string     { return "conn closed" }
func (sideConnClosed) SafeToRetry() bool { return true }

// The pure half of TestRunInTxFnsOwnErrorsFromOtherConnections: with the
// transaction's connection open and its transaction in progress ('T'), an
// error that is not the transaction's connection's is fn's own
// (Permanent): classifyInTx turns a network error into Permanent in that
// state, but lets a SafeToRetry one through as retryable.
func TestClassifyInTxSafeToRetryErrorOfAnotherConnectionIsFnsOwn(t *testing.T) {
	err := fmt.Errorf("side call: %w", sideConnClosed{})
	if !pgconn.SafeToRetry(err) {
		t.Fatal("the stand-in is not SafeToRetry")
	}
	if c := classifyInTx(context.Background(), false, 'T', pgx.TxOptions{}, err); c != Permanent {
		t.Errorf("an error of another connection of fn's, the transaction's open and well: class %v (retryable %v), want permanent (fn's own)", c, c.Retryable())
	}
}

// A statement of the transaction fn cancelled with a context of its own
// (pgx closed the connection; RunInTx's ctx is fine) is fn's: Permanent,
// not NodeDown. One a deadline of fn's own cut is NodeDown: a hung master
// looks the same (TestRunInTxHungMasterCutByFnsOwnStatementTimeoutIsRetried).
func TestClassifyInTxStatementCancelledByFnIsNotNodeDown(t *testing.T) {
	err := fmt.Errorf("canceled: %w", context.Canceled)
	if c := classifyInTx(context.Background(), true, 'T', pgx.TxOptions{}, err); c != Permanent {
		t.Errorf("a statement fn cancelled, on a closed connection: class %v, want permanent", c)
	}
	err = fmt.Errorf("timeout: %w", context.DeadlineExceeded) // pgconn's errTimeout text
	if c := classifyInTx(context.Background(), true, 'T', pgx.TxOptions{}, err); c != NodeDown {
		t.Errorf("a statement fn's own deadline cut, on a closed connection: class %v, want node down", c)
	}
}
