package failover_test

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
)

type notSent struct{ error }

func (notSent) SafeToRetry() bool { return true }

// notSentCtx is how pgconn reports a context that had ended before anything
// was sent: safe to retry, and it unwraps to the context's error.
type notSentCtx struct{ err error }

func (e notSentCtx) Error() string     { return "context already done: " + e.err.Error() }
func (e notSentCtx) Unwrap() error     { return e.err }
func (e notSentCtx) SafeToRetry() bool { return true }

func TestClassify(t *testing.T) {
	pg := func(code string) error { return &pgconn.PgError{Code: code, Message: "m"} }
	for _, tc := range []struct {
		name   string
		err    error
		class  failover.Class
		commit failover.Class
	}{
		{"nil", nil, failover.None, failover.None},
		{"nothing sent", notSent{errors.New("write failed")}, failover.SafeToRetry, failover.SafeToRetry},
		{"read only", pg("25006"), failover.RoleChanged, failover.RoleChanged},
		{"admin shutdown", pg("57P01"), failover.RoleChanged, failover.CommitUnknown},
		{"crash shutdown", fmt.Errorf("wrapped: %w", pg("57P02")), failover.RoleChanged, failover.CommitUnknown},
		{"cannot connect now", pg("57P03"), failover.RoleChanged, failover.CommitUnknown},
		{"connection exception", pg("08006"), failover.NodeDown, failover.CommitUnknown},
		{"serialization", pg("40001"), failover.Serialization, failover.Serialization},
		{"deadlock", pg("40P01"), failover.Serialization, failover.Serialization},
		{"unique violation", pg("23505"), failover.Permanent, failover.Permanent},
		{"syntax", pg("42601"), failover.Permanent, failover.Permanent},
		{"reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, failover.NodeDown, failover.CommitUnknown},
		{"eof", fmt.Errorf("receive: %w", io.ErrUnexpectedEOF), failover.NodeDown, failover.CommitUnknown},
		{"closed", fmt.Errorf("read: %w", net.ErrClosed), failover.NodeDown, failover.CommitUnknown},
		{"refused", syscall.ECONNREFUSED, failover.NodeDown, failover.CommitUnknown},
		// database/sql's bad connection: by its contract nothing was sent,
		// and the connection (with any transaction on it) is gone.
		{"bad connection", fmt.Errorf("exec: %w", driver.ErrBadConn), failover.NodeDown, failover.NodeDown},
		// A context that ends while COMMIT is in flight leaves its outcome
		// open, cancelled or expired alike (pgconn reports a cancel as
		// context.Canceled, a deadline as a timeout wrapping
		// context.DeadlineExceeded).
		{"caller cancelled", context.Canceled, failover.Permanent, failover.CommitUnknown},
		{"caller cancelled, wrapped", fmt.Errorf("failed to receive message: %w", context.Canceled), failover.Permanent, failover.CommitUnknown},
		{"caller deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), failover.Permanent, failover.CommitUnknown},
		{"context ended before COMMIT left", notSentCtx{context.Canceled}, failover.Permanent, failover.SafeToRetry},
		{"split brain", &hasql.SplitBrainError{Addrs: []string{"a:1", "b:2"}, Timeline: 2}, failover.RoleChanged, failover.RoleChanged},
		{"stale master", &hasql.StaleMasterError{Nodes: []string{"a:1 (timeline 1)"}, Timeline: 2}, failover.NoMaster, failover.NoMaster},
		{"no master", &hasql.NoNodeError{Target: hasql.ErrNoMaster, Cause: context.DeadlineExceeded}, failover.NoMaster, failover.NoMaster},
		{"no master, cancelled", fmt.Errorf("acquire: %w", &hasql.NoNodeError{Target: hasql.ErrNoMaster, Cause: context.Canceled}), failover.NoMaster, failover.NoMaster},
		{"no replica", &hasql.NoNodeError{Target: hasql.ErrNoReplica, Cause: context.DeadlineExceeded}, failover.Permanent, failover.Permanent},
		{"closed manager", hasql.ErrClosed, failover.Permanent, failover.Permanent},
		{"tx had failed", pgx.ErrTxCommitRollback, failover.Permanent, failover.Permanent},
		{"user error", errors.New("insufficient funds"), failover.Permanent, failover.CommitUnknown},
		// pgx v5.13: the connection closed under the COMMIT after it may
		// have been sent.
		{"closed in flight", fmt.Errorf("conn closed: %w", errors.New("conn closed")), failover.Permanent, failover.CommitUnknown},
		// The server ended the session with its answer to COMMIT: a PANIC
		// (a failed WAL flush) may come after the commit record is
		// durable; a FATAL ends the session whatever its code.
		{"panic at commit", &pgconn.PgError{Severity: "PANIC", SeverityUnlocalized: "PANIC", Code: "58030", Message: "could not fsync"}, failover.Permanent, failover.CommitUnknown},
		{"fatal at commit", &pgconn.PgError{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "53100", Message: "could not write"}, failover.Permanent, failover.CommitUnknown},
		{"fatal, localized", &pgconn.PgError{Severity: "FATAL", SeverityUnlocalized: "", Code: "XX000", Message: "m"}, failover.Permanent, failover.CommitUnknown},
		{"classified", &failover.Error{Class: failover.CommitUnknown, Err: io.EOF}, failover.CommitUnknown, failover.CommitUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.class, failover.Classify(tc.err), "Classify")
			assert.Equal(t, tc.commit, failover.ClassifyCommit(tc.err), "ClassifyCommit")
		})
	}
}

func TestErrorMatchesItsClass(t *testing.T) {
	err := fmt.Errorf("outer: %w", &failover.Error{Class: failover.CommitUnknown, Attempts: 1, Err: io.ErrUnexpectedEOF})
	assert.ErrorIs(t, err, failover.ErrCommitUnknown)
	assert.NotErrorIs(t, err, failover.ErrNodeDown)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "the cause is reachable")
	var fe *failover.Error
	assert.ErrorAs(t, err, &fe)
	assert.Contains(t, err.Error(), "commit outcome unknown")
	assert.Contains(t, (&failover.Error{Class: failover.NodeDown, Attempts: 12, Err: io.EOF}).Error(), "after 12 attempts")
	for c := failover.None; c <= failover.Permanent; c++ {
		assert.NotEqual(t, "unknown", c.String())
	}
	assert.True(t, failover.NodeDown.Retryable())
	assert.True(t, failover.NoMaster.Retryable(), "no master yet: the next one may take it")
	noMaster := &failover.Error{Class: failover.NoMaster, Attempts: 3, Err: errors.New("x")}
	assert.ErrorIs(t, noMaster, hasql.ErrNoMaster, "class NoMaster matches hasql.ErrNoMaster")
	assert.Contains(t, noMaster.Error(), "no master after 3 attempts")
	assert.False(t, failover.CommitUnknown.Retryable(), "never re-run a commit of unknown outcome")
}
