// Package failover tells what an error means while the cluster changes, and
// re-runs transactions on the new master when, and only when, that is safe.
//
//	err := failover.RunInTx(ctx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
//		_, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance - $1 WHERE id = $2", amount, id)
//		return err
//	})
//	if errors.Is(err, failover.ErrCommitUnknown) {
//		// The connection was lost, or ctx ended, during COMMIT: the
//		// transaction may or may not have committed. It was not run again.
//	}
package failover

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgxha/pgxha/hasql"
)

// Class is what an error means for retrying.
type Class int

const (
	// None: no error.
	None Class = iota
	// SafeToRetry: the statement provably never ran (hasql.NeverRan:
	// nothing reached the server, as pgconn.SafeToRetry says, or the server
	// ended the idle session before reading it, 57P05), so running it again
	// cannot run it twice. The routed Queriers retry exactly these.
	SafeToRetry
	// RoleChanged: the node is no longer what it was asked for: 25006
	// (read-only transaction: the master was demoted or the connection
	// reached a replica), 57P01 (admin shutdown), 57P02 (crash shutdown),
	// 57P03 (cannot connect now), or a split brain refusing writes. The
	// transaction did not commit; the next master can take it.
	RoleChanged
	// NodeDown: the connection failed (refused, reset, closed, timed out)
	// outside a commit; the transaction did not commit.
	NodeDown
	// NoMaster: the acquire ended with no node qualified as master
	// (hasql.ErrNoMaster, a *hasql.StaleMasterError among them): nothing
	// was sent. A later attempt may find the next master; RunInTx tries
	// again until its context ends.
	NoMaster
	// Serialization: the transaction was rolled back by a serialization
	// failure (40001) or a deadlock (40P01); running it again is the usual
	// answer.
	Serialization
	// CommitUnknown: the connection was lost, or the context ended,
	// while COMMIT was in flight. The transaction may or may not have
	// committed: never run again blindly.
	CommitUnknown
	// Permanent: everything else: running again would fail again, or
	// the caller's context ended.
	Permanent
)

var classNames = [...]string{"none", "safe to retry", "role changed", "node down", "no master", "serialization", "commit outcome unknown", "permanent"}

// String names the class.
func (c Class) String() string {
	if c < 0 || int(c) >= len(classNames) {
		return "unknown"
	}
	return classNames[c]
}

// Retryable reports whether a transaction that failed with this class may
// run again from the start.
func (c Class) Retryable() bool {
	return c == SafeToRetry || c == RoleChanged || c == NodeDown || c == NoMaster || c == Serialization
}

// Sentinels for errors.Is on an *Error of the matching class. An *Error of
// class NoMaster matches hasql.ErrNoMaster.
var (
	ErrSafeToRetry   = errors.New("failover: safe to retry")
	ErrRoleChanged   = errors.New("failover: node role changed")
	ErrNodeDown      = errors.New("failover: node down")
	ErrSerialization = errors.New("failover: serialization failure")
	ErrCommitUnknown = errors.New("failover: commit outcome unknown")
	ErrPermanent     = errors.New("failover: permanent error")
)

func (c Class) sentinel() error {
	switch c {
	case SafeToRetry:
		return ErrSafeToRetry
	case RoleChanged:
		return ErrRoleChanged
	case NodeDown:
		return ErrNodeDown
	case NoMaster:
		return hasql.ErrNoMaster
	case Serialization:
		return ErrSerialization
	case CommitUnknown:
		return ErrCommitUnknown
	case Permanent:
		return ErrPermanent
	}
	return nil
}

// Error is an error with its class, as RunInTx returns it. errors.Is(err,
// ErrCommitUnknown) and friends match the class; errors.As reaches the
// cause.
type Error struct {
	Class Class
	// Attempts is how many times the transaction ran.
	Attempts int
	Err      error
}

func (e *Error) Error() string {
	if e.Attempts > 1 {
		return "failover: " + e.Class.String() + " after " + itoa(e.Attempts) + " attempts: " + e.Err.Error()
	}
	return "failover: " + e.Class.String() + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches the sentinel of e's class.
func (e *Error) Is(target error) bool { return target != nil && target == e.Class.sentinel() }

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// Classify tells what err means for running a statement or transaction
// again. It does not know whether err came from a COMMIT: see
// ClassifyCommit. What it knows it says: a write whose token could not
// be read (hasql.ErrTokenUnread) is done, never to run again (Permanent),
// and a statement on the master lost outside a transaction
// (hasql.NodeLostError with MayHaveRun and Autocommit: a routed
// m.Master().Exec, say) may have committed, like a COMMIT whose answer was
// lost (CommitUnknown).
func Classify(err error) Class {
	if err == nil {
		return None
	}
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Class
	}
	if errors.Is(err, hasql.ErrTokenUnread) {
		return Permanent // the write committed: only its token is missing
	}
	var le *hasql.NodeLostError
	if errors.As(err, &le) && le.MayHaveRun && le.Autocommit && !le.Role.IsReplica() {
		return CommitUnknown
	}
	if errors.Is(err, hasql.ErrNoMaster) {
		// An acquire that found no master before its context ended:
		// nothing was sent, the next master may take it.
		return NoMaster
	}
	if contextEnded(err) {
		// The caller's context ended: stop, whatever else happened. A
		// statement its deadline cut may have run, and committed if it
		// ran outside a transaction: never to be run again unasked. Only
		// a connect that timed out (pgx's connect_timeout, a deadline of
		// its own) says the node did not answer.
		var ce *pgconn.ConnectError
		if !pgconn.Timeout(err) || errors.Is(err, context.Canceled) || !errors.As(err, &ce) {
			return Permanent
		}
	}
	if errors.Is(err, hasql.ErrSplitBrain) {
		return RoleChanged
	}
	if hasql.NeverRan(err) {
		return SafeToRetry
	}
	if errors.Is(err, hasql.ErrNodeLost) {
		// The node was lost under the statement: outside a COMMIT (see
		// ClassifyCommit), the transaction did not commit.
		return NodeDown
	}
	if errors.Is(err, driver.ErrBadConn) {
		// database/sql's: the driver sent nothing (its contract), the
		// connection is gone, and a transaction on it with it.
		return NodeDown
	}
	if errors.Is(err, hasql.ErrClosed) || errors.Is(err, hasql.ErrNoReplica) {
		// A closed manager, or a replica acquire that waited until its
		// context ended: nothing to retry within this context.
		return Permanent
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "25006", "57P01", "57P02", "57P03":
			return RoleChanged
		case "40001", "40P01":
			return Serialization
		}
		if len(pgErr.Code) == 5 && pgErr.Code[:2] == "08" { // connection exception
			return NodeDown
		}
		return Permanent
	}
	if pgconn.SafeToRetry(err) {
		return SafeToRetry
	}
	if connectionLost(err) {
		return NodeDown
	}
	return Permanent
}

// ClassifyCommit classifies an error returned by COMMIT. A COMMIT that never
// left (pgconn.SafeToRetry) did not commit; one the server refused (an
// error answer: 25006, a serialization failure, a transaction that had
// failed) rolled back. Anything else leaves the outcome unknown
// (CommitUnknown): the connection was lost or closed, the server shut down,
// or the context was cancelled or expired, with COMMIT in flight, and the
// server may have committed (or still be committing: waiting for a
// synchronous replica, say).
func ClassifyCommit(err error) Class {
	if err == nil {
		return None
	}
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Class
	}
	if hasql.NeverRan(err) {
		return SafeToRetry // the COMMIT never left
	}
	if errors.Is(err, driver.ErrBadConn) {
		return NodeDown // never sent, and the transaction is gone with its connection
	}
	if errors.Is(err, pgx.ErrTxCommitRollback) {
		return Permanent // the transaction had failed: it rolled back
	}
	if errors.Is(err, hasql.ErrSplitBrain) {
		return RoleChanged // refused before it was sent
	}
	if errors.Is(err, hasql.ErrNoMaster) || errors.Is(err, hasql.ErrNoReplica) || errors.Is(err, hasql.ErrClosed) {
		return Classify(err) // from an acquire: nothing was sent
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// The server answered. A shutdown, a connection exception or any
		// error that ended the session (FATAL, PANIC: a failed WAL flush
		// may come after the commit record is on disk) leaves the outcome
		// open; an ERROR rolled the transaction back.
		if sessionEnding(pgErr) {
			return CommitUnknown
		}
		switch c := Classify(pgErr); c {
		case NodeDown:
			return CommitUnknown
		case RoleChanged:
			if pgErr.Code == "25006" {
				return RoleChanged // refused: nothing committed
			}
			return CommitUnknown
		default:
			return c
		}
	}
	// No answer, and the COMMIT may have left: a lost or closed
	// connection (pgx v5.13 reports a connection closed under an operation
	// in flight as a "conn closed" that is not safe to retry; older ones
	// as a network error), an ended context.
	return CommitUnknown
}

// sessionEnding reports whether the server ended the session with e.
func sessionEnding(e *pgconn.PgError) bool {
	sev := e.SeverityUnlocalized
	if sev == "" {
		sev = e.Severity // a server before 9.6 sends only the localized one
	}
	return sev == "FATAL" || sev == "PANIC"
}

func contextEnded(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// connectionLost reports network-level failures of an established or new
// connection.
func connectionLost(err error) bool {
	if pgconn.Timeout(err) {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	return false
}
