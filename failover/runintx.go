package failover

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgxha/pgxha/hasql"
)

// Options configures RunInTx.
type Options struct {
	// TxOptions start each attempt's transaction.
	TxOptions pgx.TxOptions
	// MaxAttempts bounds how often the transaction runs (default 10). The
	// context bounds it too.
	MaxAttempts int
	// InitialBackoff and MaxBackoff shape the exponential backoff, with
	// jitter, between attempts (defaults 10ms and 1s).
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// NoSerializationRetry leaves serialization failures and deadlocks
	// (40001, 40P01) to the caller instead of running the transaction
	// again.
	NoSerializationRetry bool
	// OnRetry, when set, is called before each new attempt with the error
	// of the one that failed, its class, and the wait before the next.
	OnRetry func(attempt int, err error, class Class, wait time.Duration)
}

const (
	defaultMaxAttempts    = 10
	defaultInitialBackoff = 10 * time.Millisecond
	defaultMaxBackoff     = time.Second
)

// RunInTx runs fn in a transaction on the current master and commits it.
// When an attempt fails in a way that guarantees the transaction did not
// commit — the connection could not be had, the master went down or stopped
// being master before COMMIT, a split brain refused it, a serialization
// failure — fn runs again, from the start, in a new transaction on whatever
// node is master then, after an exponential backoff with jitter, up to
// MaxAttempts times and within ctx. fn must therefore have no effect outside
// the transaction that cannot be repeated.
//
// An attempt whose BEGIN failed because the session ended (hasql.SessionEnded:
// 57P01, 57P05, a lost connection, ...) began nothing and is retried; so is
// a statement that provably never ran (hasql.NeverRan), the same rule the
// routed Queriers (hasql.Querier) retry by. Errors from losing the node
// under a statement match hasql.ErrNodeLost (see hasql.NodeLostError).
//
// An acquire that ends with no master (hasql.ErrNoMaster) is retried like
// a node that is down, until ctx ends; the error then has class NoMaster and
// unwraps to hasql.ErrNoMaster.
//
// A connection lost, or ctx cancelled or expired, while COMMIT was in flight
// leaves the outcome unknown: RunInTx never runs fn again then and returns an
// *Error that matches ErrCommitUnknown. So does a COMMIT that succeeded
// after a cancel request ended its wait for synchronous standbys
// (hasql.SyncRepCancelled; the error also matches hasql.ErrSyncRepCancelled). An error of fn that is not about the cluster (its own
// errors, constraint violations, ...) is returned as it is, after a
// rollback: a network error or an EOF while the transaction's connection
// is still open (a call to another service) is fn's own, and so is 25006
// in a transaction TxOptions made READ ONLY. Other failures are returned as an *Error with their class and
// the number of attempts.
//
// fn may end the transaction itself: tx.Commit, hasql.CommitToken (for a
// token of the transaction), tx.Rollback, or a COMMIT, END, ROLLBACK,
// ABORT or PREPARE TRANSACTION statement sent through tx. RunInTx then
// commits nothing more and never runs fn again: fn's error is returned as
// it is, or, when the connection was lost with such a statement in flight,
// as an *Error that matches ErrCommitUnknown. Statements are read before
// pgx sends them on the connection: through tx, tx.Conn(), savepoints and
// batches, a prepared statement run by its name as the SQL it was prepared
// with (a name pgx did not see prepared is taken for a possible COMMIT, and
// so is the END of a BEGIN ATOMIC body: a retry lost at worst);
// statements sent through tx.Conn().PgConn() (pgconn's Exec, ExecParams,
// Prepare, ExecPrepared, pipelines, ExecBatch) are read from the messages
// sent on the connection (one whose SQL they do not show as a possible
// COMMIT; under TLS, so is any ExecBatch of fn's); a connection a
// ConnConfig.AfterNetConnect of yours wraps is read through tx only, and
// one whose ConnConfig.BuildFrontend is yours through pgx's tracer only.
// Not read: the SQL a QueryRewriter of yours writes (pgx traces the SQL
// before it); a COMMIT in it is seen only by the transaction status after
// fn, not at all with AND CHAIN. fn
// that rolls its transaction back and returns nil (a deferred tx.Rollback
// runs before RunInTx commits), or whose own COMMIT failed or was answered
// ROLLBACK (a failed transaction), gets an error: what it wrote since its
// last commit did not commit. The answer is read for a COMMIT sent through
// pgx (Exec, Query, QueryRow, a batch of it alone; through tx or
// tx.Conn()), not through tx.Conn().PgConn(), whose answer fn reads
// itself.
func RunInTx(ctx context.Context, m *hasql.Manager, opts Options, fn func(ctx context.Context, tx pgx.Tx) error) error {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = defaultMaxAttempts
	}
	if opts.InitialBackoff <= 0 {
		opts.InitialBackoff = defaultInitialBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = defaultMaxBackoff
	}
	eb := backoff.NewExponentialBackOff()
	eb.InitialInterval = opts.InitialBackoff
	eb.MaxInterval = opts.MaxBackoff
	eb.RandomizationFactor = 0.5
	eb.Multiplier = 2
	eb.MaxElapsedTime = 0 // bounded by attempts and ctx
	eb.Reset()
	b := backoff.WithContext(backoff.WithMaxRetries(eb, uint64(opts.MaxAttempts-1)), ctx)

	attempts := 0
	var lastErr error
	var lastClass Class
	op := func() error {
		attempts++
		err, class := runOnce(ctx, m, opts.TxOptions, fn)
		if err == nil {
			return nil
		}
		lastErr, lastClass = err, class
		if ctx.Err() != nil || !class.Retryable() || class == Serialization && opts.NoSerializationRetry {
			return backoff.Permanent(err)
		}
		return err
	}
	notify := func(err error, wait time.Duration) {
		if opts.OnRetry != nil {
			opts.OnRetry(attempts, err, lastClass, wait)
		}
	}
	err := backoff.RetryNotify(op, b, notify)
	if err == nil {
		return nil
	}
	if lastErr == nil {
		// The context ended before the first attempt.
		return &Error{Class: Permanent, Attempts: attempts, Err: err}
	}
	if lastClass == Permanent && (ctx.Err() == nil || !contextEnded(lastErr)) {
		// An error of fn's own, its own contexts' included: as it is.
		var fe *Error
		if !errors.As(lastErr, &fe) {
			return lastErr // the caller's own error, or one from the server about the work itself
		}
	}
	if ctx.Err() != nil && lastClass.Retryable() {
		return &Error{Class: lastClass, Attempts: attempts, Err: errors.Join(lastErr, ctx.Err())}
	}
	return &Error{Class: lastClass, Attempts: attempts, Err: lastErr}
}

// runOnce runs one attempt. Errors from losing the master under a
// statement come back as a *hasql.NodeLostError (see hasql.NodeLost),
// classified as the error pgx returned.
func runOnce(ctx context.Context, m *hasql.Manager, txOpts pgx.TxOptions, fn func(context.Context, pgx.Tx) error) (error, Class) {
	conn, err := m.AcquireMaster(ctx)
	if err != nil {
		return err, Classify(err)
	}
	defer conn.Release()
	tx, err := conn.BeginTx(ctx, txOpts)
	if err != nil {
		c := classifyInTx(ctx, conn.Conn().IsClosed(), 0, txOpts, err)
		if c == Permanent && ctx.Err() == nil && hasql.SessionEnded(err) {
			// The session ended under BEGIN (a shutdown, a termination,
			// an idle timeout, a lost connection): no transaction began.
			c = NodeDown
		}
		err = hasql.NodeLost(conn, err)
		var le *hasql.NodeLostError
		if errors.As(err, &le) {
			le.MayHaveRun, le.Autocommit = false, false // BEGIN: nothing to have run
		}
		return err, c
	}
	ft, stop := newFnTx(tx)
	defer stop() // should fn panic
	err = fn(ctx, ft)
	stop()
	pc := conn.Conn()
	closed := pc.IsClosed() // before a rollback, which may close it
	var status byte
	if !closed {
		status = pc.PgConn().TxStatus()
		if status == 'I' && !ft.st.over.Load() {
			// Ended through tx.Conn(): how, nothing tells.
			ft.st.over.Store(true)
			ft.st.committed.Store(true)
		}
	}
	if ft.st.committed.Load() || err == nil && ft.st.last.Load() != 0 {
		// Something fn sent may have committed: fn never runs again.
		return fnCommitted(ctx, conn, tx, ft.st, err)
	}
	if err != nil {
		err = hasql.NodeLost(conn, err) // before the rollback: the statement's transaction status
		rollback(tx)
		if ft.st.savepoints.Load() || ft.st.rolledBack.Load() {
			status = 0 // a failed statement may have been rolled back (to a savepoint, AND CHAIN)
		}
		return err, classifyInTx(ctx, closed, status, txOpts, err)
	}
	if ft.st.over.Load() {
		// The transaction ended, and nothing says it committed.
		return errFnRolledBack, Permanent
	}
	if err := tx.Commit(ctx); err != nil {
		c := ClassifyCommit(err)
		return hasql.NodeLost(conn, err), c
	}
	if hasql.SyncRepCancelled(conn.Conn()) {
		// Committed on the master alone: a failover to a synchronous
		// standby may lose it, and running it again may write it twice.
		return hasql.ErrSyncRepCancelled, CommitUnknown
	}
	return nil, None
}

// classifyInTx classifies an error before COMMIT, knowing the connection
// and the transaction's options:
//   - an error Classify calls permanent that came with the connection
//     closed, and no answer from the server, is the connection's failure
//     (pgx v5.13 reports a connection closed under an operation in flight as
//     a plain "conn closed"): nothing committed, the transaction may run
//     again;
//     A statement fn cancelled by a context of its own (RunInTx's ctx is
//     fine) is not: it stays permanent, as Classify says of a caller's
//     cancel. One a per-statement deadline of fn's cut is the connection's
//     failure: a hung master and a slow statement look alike;
//   - a network error (a refused dial, an unexpected EOF) or one that says
//     nothing was sent (pgconn's SafeToRetry) with the connection still
//     open is not the connection's (pgx closes it on any failure of its
//     own): it is fn's own, such as a call to another service or a
//     statement on another connection, and is returned as it is;
//   - 25006 in a transaction the caller made READ ONLY is the caller's
//     write refused by that mode, not a master that lost its role.
func classifyInTx(ctx context.Context, closed bool, status byte, txOpts pgx.TxOptions, err error) Class {
	c := Classify(err)
	var pgErr *pgconn.PgError
	isPg := errors.As(err, &pgErr)
	switch {
	case c == Permanent && ctx.Err() == nil && closed && !isPg && !errors.Is(err, hasql.ErrTokenUnread) && !errors.Is(err, context.Canceled):
		return NodeDown
	case (c == NodeDown || c == CommitUnknown || c == SafeToRetry) && !isPg && !closed:
		// With the transaction's connection open, the error is not its
		// (pgx closes a connection on any failure of its own): nothing
		// of another connection of fn's, even one that says nothing was
		// sent on it, tells that fn may run again.
		return Permanent
	case isPg && !closed && (strings.EqualFold(pgErr.Severity, "FATAL") || strings.EqualFold(pgErr.Severity, "PANIC")):
		// A session ended, and not the transaction's: another
		// connection of fn's.
		return Permanent
	case isPg && status == 'T' && c.Retryable():
		// An error the server gave, while the transaction is not in a
		// failed state: it came from another connection of fn's (one on
		// the transaction's would have failed it).
		return Permanent
	case c == RoleChanged && isPg && pgErr.Code == "25006" && txOpts.AccessMode == pgx.ReadOnly:
		return Permanent
	}
	return c
}

// errFnRolledBack is RunInTx's error when fn rolled its transaction back
// (tx.Rollback, a ROLLBACK statement; a deferred tx.Rollback runs before
// RunInTx commits) and returned nil.
var errFnRolledBack = errors.New("failover: fn rolled its transaction back and returned nil: what it wrote since its last commit did not commit (a deferred tx.Rollback in fn runs before RunInTx commits)")

// errFnCommitFailed is RunInTx's error when fn's own COMMIT failed, or
// rolled back a failed transaction, and fn returned nil.
var errFnCommitFailed = errors.New("failover: fn's own COMMIT failed or rolled back, and fn returned nil: what it wrote since its last commit did not commit")

// fnCommitted finishes an attempt in which fn ended its transaction or
// something it sent may have committed, with err fn's error; fn never runs
// again. A commit on the master alone (a cancelled wait for synchronous
// standbys) is said first. With fn's error and the connection open the
// server answered: the error is returned as it is; with it lost (or ctx
// ended) whether it committed is unknown: CommitUnknown, unless the error
// says the commit succeeded (hasql.ErrTokenUnread). With nil, the last way
// fn ended its transaction decides: a rollback or a failed COMMIT is an
// error, and a transaction fn left open (AND CHAIN) is committed.
func fnCommitted(ctx context.Context, conn *pgxpool.Conn, tx pgx.Tx, st *fnState, err error) (error, Class) {
	pc := conn.Conn()
	closed := pc.IsClosed()
	if st.syncCancelled.Load() || !closed && hasql.SyncRepCancelled(pc) {
		if err == nil || !errors.Is(err, hasql.ErrTokenUnread) {
			rollback(tx) // what fn left open, if anything
		}
		return hasql.ErrSyncRepCancelled, CommitUnknown
	}
	switch {
	case err == nil:
	case errors.Is(err, hasql.ErrTokenUnread):
		return err, Permanent
	case closed || ctx.Err() != nil:
		return hasql.NodeLost(conn, err), CommitUnknown
	default:
		rollback(tx) // what fn left open, if anything
		return err, Permanent
	}
	switch st.last.Load() {
	case endRollback:
		rollback(tx)
		return errFnRolledBack, Permanent
	case endCommitFailed:
		rollback(tx)
		return errFnCommitFailed, Permanent
	}
	if closed {
		if st.unsure.Load() {
			return hasql.NodeLost(conn, pgx.ErrTxClosed), CommitUnknown
		}
		return nil, None
	}
	if pc.PgConn().TxStatus() != 'I' {
		// A transaction fn began again (COMMIT AND CHAIN): RunInTx's to
		// commit, never to run again.
		if err := tx.Commit(ctx); err != nil {
			if c := ClassifyCommit(err); c != CommitUnknown {
				return hasql.NodeLost(conn, err), Permanent
			}
			return hasql.NodeLost(conn, err), CommitUnknown
		}
		if hasql.SyncRepCancelled(pc) {
			return hasql.ErrSyncRepCancelled, CommitUnknown
		}
	}
	return nil, None
}

// rollback ends a failed transaction, bounded: on a dead connection there is
// nothing to wait for.
func rollback(tx pgx.Tx) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = tx.Rollback(ctx)
}

// OnMasterChange calls fn with the master's address ("" while there is
// none) now and each time it changes, until ctx ends or the Manager
// closes. It blocks; run it in a goroutine of your own.
func OnMasterChange(ctx context.Context, m *hasql.Manager, fn func(addr string)) {
	last := "\x00"
	for {
		changed := m.Changed()
		if m.Closed() {
			return // Changed is closed for good: nothing changes any more
		}
		if master := m.Stat().Master; master != last {
			last = master
			fn(master)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}
