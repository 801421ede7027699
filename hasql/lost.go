package hasql

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrNodeLost: the node a statement ran on was lost while it ran: it
// crashed or shut down, the network to it failed, or pgxha cut the
// connection because the node stopped being what it was picked as
// (demoted, removed from the node set). Errors that match it are
// *NodeLostError values.
var ErrNodeLost = errors.New("hasql: node lost")

// NodeLostError says that the node a statement ran on was lost while the
// statement ran, which node it was, what it was, and whether the statement
// may have run. It unwraps to ErrNodeLost and to the error pgx returned
// (a *pgconn.PgError, io.ErrUnexpectedEOF, a net.Error, ...).
//
// Routed statements (the Queriers' Exec, Query, QueryRow, Begin), failover's
// RunInTx and the connections that AcquireMaster and AcquireReplica return
// give one when the connection is lost under a statement.
type NodeLostError struct {
	// Addr is the node, "host:port" as in NodeStatus.
	Addr string
	// Role is what the node was to the Manager when the statement was
	// sent to it (RoleMaster for a write), or RoleUnknown when that is not
	// known.
	Role Role
	// MayHaveRun is false only when the statement provably did not run (it
	// never left, or the server ended the session before reading it). A
	// statement that may have run may also have committed: a write on the
	// master is in doubt, like a COMMIT whose answer was lost (see
	// failover.ErrCommitUnknown); find out before doing it again.
	MayHaveRun bool
	// Autocommit is set when the statement ran outside a transaction (a
	// statement of m.Master(), or one on a connection that was idle
	// before it): one that may have run may have committed, as a COMMIT
	// whose answer was lost (failover.Classify calls it CommitUnknown on a
	// master). A statement of m.Replica() is taken for a read, also when
	// it fell back to the master: Autocommit stays false. A statement
	// that commits a transaction by its own text ("...; COMMIT") is not
	// told apart: classify it with failover.ClassifyCommit.
	Autocommit bool
	// Cut is set when pgxha closed the connection itself: the node was
	// demoted or removed, or another server answers at its address (a
	// name that moved, a restart), and work in flight on it was cut off.
	Cut bool
	// Err is the error pgx returned.
	Err error

	// network is the network's error under Err, when pgx kept only
	// "conn closed": said in the text and unwrapped to.
	network error
	// unsent: a write to the connection failed (see trackedConn.Write)
	// before any byte of the statement under way had left on it: pgx
	// says above it whether any of that write left (see NeverRan).
	unsent bool
}

func (e *NodeLostError) Error() string {
	var b strings.Builder
	b.WriteString("hasql: lost ")
	if e.Role != RoleUnknown {
		b.WriteString(e.Role.String())
		b.WriteString(" ")
	} else {
		b.WriteString("node ")
	}
	b.WriteString(e.Addr)
	if e.Cut {
		b.WriteString(" (connection cut by pgxha: the node lost its role, or another server answers at its address)")
	}
	switch {
	case e.MayHaveRun && e.Autocommit:
		b.WriteString(", the statement may have run and committed")
	case e.MayHaveRun:
		b.WriteString(", the statement may have run")
	default:
		b.WriteString(", the statement did not run")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.network != nil {
		b.WriteString(" (")
		b.WriteString(e.network.Error())
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns ErrNodeLost, the error pgx returned and, when pgx kept
// only "conn closed", the network's error under it.
func (e *NodeLostError) Unwrap() []error {
	errs := []error{ErrNodeLost}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	if e.network != nil {
		errs = append(errs, e.network)
	}
	return errs
}

// fromConn fills in what the connection under a lost statement knows:
// whether pgxha cut it, and the network's error when pgx's is not it.
func (e *NodeLostError) fromConn(tc *trackedConn) {
	if tc == nil {
		return
	}
	e.Cut = e.Cut || tc.cut.Load()
	if p := tc.netErr.Load(); p != nil && e.network == nil && !errors.Is(e.Err, *p) {
		var inner *NodeLostError
		if !errors.As(*p, &inner) {
			e.network = *p
		}
	}
}

// NeverRan reports whether err proves that the statement it came from never
// ran, so that running it again cannot run it twice: nothing was sent
// (pgconn.SafeToRetry: a closed connection, a failed write of nothing), the
// server ended the session while it was idle and before reading the
// statement (57P05, idle_session_timeout), or a *NodeLostError says so.
// Routed statements and failover.RunInTx retry what it accepts.
func NeverRan(err error) bool {
	if err == nil {
		return false
	}
	var le *NodeLostError
	if errors.As(err, &le) {
		// A failed write of the connection's (pgxha's cut included),
		// the statement's first, that pgx's frontend says nothing of
		// left (pgconn.SafeToRetry over it). A write after others of the
		// statement (a pipeline's), or a failed read pgx may call safe
		// too (PgConn's ReceiveMessage), is not taken at pgx's word.
		return !le.MayHaveRun || le.unsent && pgconn.SafeToRetry(err)
	}
	if pgconn.SafeToRetry(err) {
		return true
	}
	// idle_session_timeout's FATAL, sent while the session was idle: the
	// statement was never read. An ERROR with the code (a procedure's
	// RAISE, postgres_fdw passing on a remote's) came from a statement
	// that ran, and may have committed (a procedure's COMMIT).
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57P05" {
		return false
	}
	sev := pgErr.SeverityUnlocalized
	if sev == "" {
		sev = pgErr.Severity
	}
	return sev == "FATAL"
}

// SessionEnded reports whether err ended the session it came from: the
// connection was lost (closed, reset, end of file) or the server ended it
// (a FATAL or PANIC error: a shutdown, a termination, an idle timeout, a
// pooler's connection exception). The caller's own context ending is not a
// session's end. A BEGIN that failed this way began nothing: it may be
// sent again on another connection.
func SessionEnded(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Severity == "FATAL" || pgErr.Severity == "PANIC" ||
			strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P")
	}
	return connLost(err)
}

// connLost reports errors of the network or of a closed connection.
func connLost(err error) bool {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, ErrNodeLost) || pgconn.SafeToRetry(err) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && !ne.Timeout() {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "EOF") || strings.Contains(msg, "conn closed") ||
		strings.Contains(msg, "connection reset") || strings.Contains(msg, "broken pipe")
}

// nodeLost makes the error a routed statement returns when it failed with
// err on n, whose connection is now closed (lost) or not: a *NodeLostError
// when the session ended under the statement (or ctx ran out while n was
// lost: down, suspect or no longer what it was picked as), err as it is
// otherwise. s is the snapshot the statement was routed by. Called on the
// error path only.
func (m *Manager) nodeLost(ctx context.Context, s *snapshot, n *node, tc *trackedConn, err error, lost, write bool) error {
	if err == nil || n == nil || errors.Is(err, context.Canceled) {
		return err
	}
	var le *NodeLostError
	if errors.As(err, &le) {
		c := *le // from the connection (see trackedConn): fill in what the router knows
		c.Role = m.roleSent(s, n, tc)
		if NeverRan(err) {
			c.MayHaveRun = false
		}
		c.fromConn(tc)
		c.Autocommit = write // the Queriers' statements run outside a transaction
		return &c
	}
	ended := lost && SessionEnded(err)
	if !ended && ctx.Err() != nil && lost && m.gone(s, n, tc) {
		ended = true // a hung or partitioned node, given up on by the caller's deadline
	}
	if !ended {
		return err
	}
	e := &NodeLostError{Addr: n.cfg.Addr, Role: m.roleSent(s, n, tc), MayHaveRun: !NeverRan(err), Autocommit: write, Err: err}
	e.fromConn(tc)
	return e
}

// lostConn returns the tracked connection under conn when err is not nil
// (for nodeLost, before conn is released), nil otherwise.
func lostConn(conn *pgxpool.Conn, err error) *trackedConn {
	if err == nil {
		return nil
	}
	return trackedOf(conn.Conn())
}

// roleSent returns what n was when the statement on tc was sent: the
// master if the snapshot s, taken before the acquire, or the one current
// as the statement began (see nodeTracer.began) says so (an acquire may
// have waited for the node to become master), else what roleAt says.
func (m *Manager) roleSent(s *snapshot, n *node, tc *trackedConn) Role {
	if tc != nil && tc.master.Load() {
		return RoleMaster
	}
	return m.roleAt(s, n)
}

// roleAt returns what n was in snapshot s.
func (m *Manager) roleAt(s *snapshot, n *node) Role {
	if s != nil && s.master == n {
		return RoleMaster
	}
	m.mu.Lock()
	r := Role(n.cv.Role)
	m.mu.Unlock()
	if r.IsReplica() {
		return r
	}
	if s != nil && slices.Contains(s.sets[setAllReplicas].nodes, n) {
		return RoleReplica
	}
	return RoleUnknown
}

// gone reports whether n is no longer what the statement on tc was sent
// to it as: down, suspect, removed, or no longer the master it was in
// snapshot s (nil: not known) or when the statement began (see
// trackedConn.master; tc nil: not known).
func (m *Manager) gone(s *snapshot, n *node, tc *trackedConn) bool {
	if n.removed.Load() || n.suspect.Load() {
		return true
	}
	m.mu.Lock()
	up := n.cv.Up
	m.mu.Unlock()
	if !up {
		return true
	}
	wasMaster := s != nil && s.master == n || tc != nil && tc.master.Load()
	return wasMaster && m.snap.Load().master != n
}

// role is what a connection reports as its node's role when it fails
// under a statement: the master if the node was when the statement
// began, else a replica if the node's last check found one. Lock-free.
func (c *trackedConn) role() Role {
	switch {
	case c.master.Load():
		return RoleMaster
	case c.reg.n.replica.Load():
		return RoleReplica
	}
	return RoleUnknown
}

// NodeLost returns err as a *NodeLostError when it comes from losing the
// node of conn, a connection from AcquireMaster or AcquireReplica (or a
// Querier's Acquire), under the statement that returned it: conn is closed
// and the session ended (see SessionEnded), or the caller's deadline ended
// the statement on a node that is by then down, suspect, removed or no
// longer the master it was when the statement began (a hung or partitioned
// node; the error still matches context.DeadlineExceeded). Otherwise it
// returns err as it is. pgx does not always keep the network's error in what a statement
// returns (a read that fails under a statement comes out as "conn
// closed"), so statements run on acquired connections are told apart
// with it:
//
//	_, err := conn.Exec(ctx, sql)
//	if err = hasql.NodeLost(conn, err); errors.Is(err, hasql.ErrNodeLost) { ... }
//
// Routed statements (Querier) and failover.RunInTx do this themselves.
func NodeLost(conn *pgxpool.Conn, err error) error {
	if err == nil || conn == nil {
		return err
	}
	pc := conn.Conn()
	// The transaction status the server gave before the statement (pgconn
	// keeps it from the last ReadyForQuery): idle, the statement ran
	// outside a transaction.
	idle := pc.PgConn().TxStatus() == 'I'
	if le, ok := err.(*NodeLostError); ok || errors.Is(err, ErrNodeLost) {
		if inner := (*NodeLostError)(nil); !ok && pc.IsClosed() && errors.As(err, &inner) && errors.Unwrap(err) == error(inner) &&
			inner.MayHaveRun && NeverRan(err) {
			// The connection's own, right under pgx's word that nothing
			// of the statement left (a write that failed at once): say so.
			c := *inner
			c.MayHaveRun, c.Autocommit = false, idle
			return &c
		}
		if !ok || !idle || le.Autocommit || !pc.IsClosed() {
			// Wrapped (kept as the caller wrapped it), not this
			// connection's loss, or nothing to add.
			return err
		}
		c := *le // from the connection (see trackedConn): it knew no better
		c.Autocommit = true
		return &c
	}
	if !pc.IsClosed() {
		return err
	}
	tc := trackedOf(pc)
	if tc == nil || tc.reg.n == nil {
		return err
	}
	if !SessionEnded(err) && !(deadlineEnded(err) && tc.reg.n.m.gone(nil, tc.reg.n, tc)) {
		return err
	}
	e := &NodeLostError{Addr: tc.reg.n.cfg.Addr, Role: tc.role(), MayHaveRun: !NeverRan(err), Autocommit: idle, Err: err}
	e.fromConn(tc)
	return e
}

// deadlineEnded reports whether err is a statement's that a deadline
// ended, not one the caller cancelled (which is never a lost node).
func deadlineEnded(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}
