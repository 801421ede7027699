package hasql

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Querier runs statements on the node a target routes to, picking a node per
// call, the way a pgxpool.Pool runs them on one of its connections:
//
//	m.Master().Exec(ctx, "INSERT ...")
//	m.Replica().QueryRow(ctx, "SELECT ...").Scan(&v)
//
// A statement that provably never ran (see NeverRan: nothing reached the
// server, or the server ended the idle session before reading it) is run
// again on a fresh connection; so is a BEGIN whose session ended (see
// SessionEnded), which began nothing. A statement whose connection was
// lost (the node
// crashed, hung or was cut off) is also run again when the node that served
// it was a replica, and had not become writable since: a replica cannot have
// executed a write. A statement the master served (a replica read that fell
// back to it included) is not run again: its error is a *NodeLostError
// (errors.Is(err, ErrNodeLost)) that says whether it may have run. At most
// maxRuns runs, within ctx. A Querier is safe for concurrent use.
type Querier struct {
	m *Manager
	t target
	o *replicaOptions // nil: plain
}

// maxRuns bounds how often a routed statement runs.
const maxRuns = 3

// Master returns the Querier that routes to the master.
func (m *Manager) Master() *Querier { return &Querier{m: m, t: targetMaster} }

// Replica returns a Querier that routes to replicas chosen with opts (see
// AcquireReplica).
func (m *Manager) Replica(opts ...ReplicaOption) *Querier {
	q := &Querier{m: m, t: targetReplica}
	if len(opts) > 0 {
		q.o = new(replicaOptions)
		applyOptions(q.o, opts)
	}
	return q
}

// Acquire returns a connection from the node the Querier routes to.
func (q *Querier) Acquire(ctx context.Context) (*pgxpool.Conn, error) {
	conn, _, err := q.m.acquireFast(ctx, q.t, q.o)
	return conn, err
}

// retry reports whether a run that failed with err on n, whose connection
// is now lost (or not), may run again: when nothing reached the server, or
// when n was a replica when it was picked and still is not writable, so it
// could not have executed a write. The node that served decides, never the
// target asked for: a replica read that fell back to the master is the
// master's statement.
func (q *Querier) retry(ctx context.Context, run int, err error, lost bool, s standby) bool {
	if err == nil || run+1 >= maxRuns || ctx.Err() != nil {
		return false
	}
	if NeverRan(err) {
		return true
	}
	return lost && s.ok && q.m.stillStandby(ctx, s, time.Now())
}

// onStandby reports, before a statement runs on conn from n, whether the
// statement cannot write: n was a replica when it was picked and has not
// been seen writable since, and the server has not said otherwise on the
// connection (the in_hot_standby parameter of PostgreSQL 14 and newer, as
// of the connection's last exchange). A transaction begun in recovery stays
// read-only even if the server is promoted while it runs.
func onStandby(conn *pgxpool.Conn, n *node) standby {
	ok := n != nil && n.servedAsReplica() && conn.Conn().PgConn().ParameterStatus("in_hot_standby") != "off"
	if !ok {
		return standby{}
	}
	// The server the connection reached (its name may have moved since the
	// node's last check), or the node's when it did not say.
	server, known := conn.Conn().PgConn().CustomData()[customDataStart].(int64)
	if !known {
		server = n.serverStart.Load()
	}
	return standby{ok: true, n: n, since: time.Now(), server: server, timeline: n.serverTL.Load(), system: n.serverSys.Load()}
}

// stillStandby confirms, after a statement's connection to a replica was
// lost (at lost), that the replica could not have run it as a write. The
// node is checked at once, and the wait is bounded by the check timeout and
// ctx; a node that cannot be checked gives no proof unless it went away
// (below). A proof is one of:
//   - a check begun after the loss finds the same server still in recovery:
//     a promotion cannot be undone without a restart, so it was in recovery
//     all the while the statement ran. A check begun while the statement
//     ran is not enough when the server is still there: the statement may
//     go on after that check (a lock wait), and a string of statements
//     begins a new transaction after a COMMIT, which writes on a server
//     promoted meanwhile;
//   - a check begun after the loss finds another server of the same system
//     in recovery on the timeline the statement's server had (it
//     restarted): the server that ran the statement ended, and a promotion
//     would have moved it to a new timeline;
//   - the server went away after the statement was sent (a check failed:
//     crashed, stopped, hung or cut off), and its last check, begun after
//     the statement was sent, found it in recovery. Its backend ended with
//     it, or cannot be reached (a hung server is not promoted while it
//     hangs); what remains is a promotion between that check and the
//     failure, which this cannot rule out.
func (m *Manager) stillStandby(ctx context.Context, s standby, lost time.Time) bool {
	n := s.n
	n.trigger()
	timer := time.NewTimer(2*m.cfg.CheckTimeout + m.cfg.FastCheckInterval)
	defer timer.Stop()
	for {
		m.mu.Lock()
		v := n.cv
		// The same server (unknown on either side: a checker that does
		// not read start times).
		st := startMicro(v.Res.StartTime)
		same := st == 0 || s.server == 0 || sameStart(st, s.server)
		switch {
		case n.removed.Load():
			m.mu.Unlock()
			return false
		case v.Up && v.CheckBegan.After(lost):
			restarted := !same && s.timeline != 0 && v.Res.Timeline == s.timeline && s.system != 0 && v.Res.SystemID == s.system
			ok := v.Res.InRecovery && (same || restarted)
			m.mu.Unlock()
			return ok
		case !v.Up && v.LastErrAt.After(s.since):
			ok := same && v.Res.InRecovery && v.CheckBegan.After(s.since)
			m.mu.Unlock()
			return ok
		}
		reported := n.reported
		m.mu.Unlock()
		select {
		case <-reported:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		case <-m.closed:
			return false
		}
	}
}

// standby is what onStandby found before a statement ran.
type standby struct {
	ok     bool
	n      *node
	since  time.Time // when the statement was about to be sent
	server int64     // the server's start time as of n's last check
	// The timeline and system identifier as of n's last check.
	timeline uint32
	system   uint64
}

// Exec runs sql on a connection of the target.
func (q *Querier) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, _, err := q.exec(ctx, sql, args, false)
	return tag, err
}

// ExecToken runs sql as Exec does, on the master's Querier (m.Master()),
// and returns a token for it (see After), read on the same connection
// right after sql ran: it names the server that ran the write, even when
// the master changes meanwhile (a failover that loses the write then
// makes a read after the token fail with ErrWriteLost). Run sql in
// autocommit: a statement that leaves a transaction open (BEGIN; INSERT
// ...) gets an error and no token, and its writes are rolled back. If sql
// ran but the token could not be read, the error unwraps to
// ErrTokenUnread; sql's write stands.
func (q *Querier) ExecToken(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, Token, error) {
	if q.t != targetMaster {
		return pgconn.CommandTag{}, Token{}, errors.New("hasql: ExecToken: only on the master's Querier (m.Master()): a token names a write")
	}
	return q.exec(ctx, sql, args, true)
}

// exec is Exec, and with token ExecToken: once sql ran, the token is read
// on its connection (see execToken).
func (q *Querier) exec(ctx context.Context, sql string, args []any, token bool) (pgconn.CommandTag, Token, error) {
	for run := 0; ; run++ {
		s := q.m.snap.Load()
		conn, n, err := q.m.acquireFast(ctx, q.t, q.o)
		if err != nil {
			return pgconn.CommandTag{}, Token{}, err
		}
		sb := onStandby(conn, n)
		tag, err := guarded(conn, func() (pgconn.CommandTag, error) { return conn.Exec(ctx, sql, args...) })
		if err == nil && token {
			tok, err := execToken(ctx, conn)
			conn.Release() // in a transaction, the pool closes it: it rolls back
			return tag, tok, err
		}
		lost, tc := conn.Conn().IsClosed(), lostConn(conn, err)
		conn.Release()
		if !q.retry(ctx, run, err, lost, sb) {
			return tag, Token{}, q.m.nodeLost(ctx, s, n, tc, err, lost, q.t == targetMaster)
		}
	}
}

// guarded calls f, which uses conn, and releases conn when a panic (a
// caller's driver.Valuer or sql.Scanner) unwinds through it, as pgxpool's
// own Exec and Row do: the pool never keeps a connection nobody holds
// (which also kept Close waiting for ever).
func guarded[T any](conn *pgxpool.Conn, f func() (T, error)) (T, error) {
	done := false
	defer func() {
		if !done {
			conn.Release()
		}
	}()
	v, err := f()
	done = true
	return v, err
}

// execToken reads the token of the statement that just ran on conn.
func execToken(ctx context.Context, conn *pgxpool.Conn) (Token, error) {
	if conn.Conn().PgConn().TxStatus() != 'I' {
		return Token{}, errExecTokenOpenTx
	}
	tok, err := tokenOf(ctx, conn)
	if err != nil {
		return Token{}, fmt.Errorf("%w: ExecToken: %w", ErrTokenUnread, err)
	}
	return tok, nil
}

// errExecTokenOpenTx is ExecToken's error for a statement that left a
// transaction open.
var errExecTokenOpenTx = errors.New("hasql: ExecToken: the statement left a transaction open: that transaction is rolled back (its connection is closed) and has no token; statements the same string ran before its BEGIN committed on their own, also without a token; run it in autocommit, or use Begin and CommitToken")

// Query runs sql on a connection of the target; the connection goes back to
// its pool when the rows are closed or read to the end.
func (q *Querier) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	for run := 0; ; run++ {
		s := q.m.snap.Load()
		conn, n, err := q.m.acquireFast(ctx, q.t, q.o)
		if err != nil {
			return nil, err
		}
		sb := onStandby(conn, n)
		rows, err := guarded(conn, func() (pgx.Rows, error) { return conn.Query(ctx, sql, args...) })
		if err == nil {
			return &routedRows{Rows: rows, conn: conn, m: q.m, ctx: ctx, s: s, n: n, write: q.t == targetMaster}, nil
		}
		lost, tc := conn.Conn().IsClosed(), lostConn(conn, err)
		conn.Release()
		if !q.retry(ctx, run, err, lost, sb) {
			return nil, q.m.nodeLost(ctx, s, n, tc, err, lost, q.t == targetMaster)
		}
	}
}

// QueryRow runs sql when Scan is called, on a connection of the target. Like
// Exec it runs again where that is safe.
func (q *Querier) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return &routedRow{q: q, ctx: ctx, sql: sql, args: args}
}

// SendBatch sends b on a connection of the target; the connection goes back
// to its pool when the results are closed.
func (q *Querier) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	conn, err := q.Acquire(ctx)
	if err != nil {
		return errBatchResults{err: err}
	}
	br, _ := guarded(conn, func() (pgx.BatchResults, error) { return conn.SendBatch(ctx, b), nil })
	rb := &routedBatch{BatchResults: br, conn: conn}
	if tx := txOf(rb.BatchResults); tx != nil {
		rb.tx = &routedTx{Tx: tx, conn: conn, once: &rb.once}
	}
	return rb
}

// CopyFrom copies rows into a table on a connection of the target.
func (q *Querier) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	s := q.m.snap.Load()
	conn, n, err := q.m.acquireFast(ctx, q.t, q.o)
	if err != nil {
		return 0, err
	}
	k, err := conn.CopyFrom(ctx, table, columns, src)
	if err != nil {
		err = q.m.nodeLost(ctx, s, n, lostConn(conn, err), err, conn.Conn().IsClosed(), q.t == targetMaster)
	}
	conn.Release()
	return k, err
}

// Begin starts a transaction on a connection of the target. The connection
// goes back to its pool on Commit or Rollback.
func (q *Querier) Begin(ctx context.Context) (pgx.Tx, error) {
	return q.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx starts a transaction with opts; see Begin.
func (q *Querier) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	for run := 0; ; run++ {
		s := q.m.snap.Load()
		conn, n, err := q.m.acquireFast(ctx, q.t, q.o)
		if err != nil {
			return nil, err
		}
		sb := onStandby(conn, n)
		tx, err := conn.BeginTx(ctx, opts)
		if err == nil {
			return &routedTx{Tx: tx, conn: conn, once: new(sync.Once)}, nil
		}
		lost, tc := conn.Conn().IsClosed(), lostConn(conn, err)
		conn.Release()
		if SessionEnded(err) && ctx.Err() == nil && run+1 < maxRuns {
			continue // a BEGIN whose session ended began nothing
		}
		if !q.retry(ctx, run, err, lost, sb) {
			err = q.m.nodeLost(ctx, s, n, tc, err, lost, q.t == targetMaster)
			if le, ok := err.(*NodeLostError); ok {
				le.MayHaveRun = false // BEGIN: nothing to have run
			}
			return nil, err
		}
	}
}

// routedRows releases its connection once the rows are done. An error
// that ends them, from losing the node, reads as a *NodeLostError.
type routedRows struct {
	pgx.Rows
	conn *pgxpool.Conn
	once sync.Once

	m     *Manager
	ctx   context.Context
	s     *snapshot
	n     *node
	lost  bool         // the connection was closed when the rows ended
	tc    *trackedConn // its network connection, when they ended with an error
	write bool         // routed for writes (see NodeLostError.Autocommit)
}

func (r *routedRows) release() {
	r.once.Do(func() {
		if err := r.Rows.Err(); err != nil {
			r.lost, r.tc = r.conn.Conn().IsClosed(), lostConn(r.conn, err)
		}
		r.conn.Release()
	})
}

func (r *routedRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Rows.Close()
	r.release()
	return false
}

func (r *routedRows) Close() {
	r.Rows.Close()
	r.release()
}

// Err is the rows' error; one from losing the node is a *NodeLostError.
func (r *routedRows) Err() error {
	err := r.Rows.Err()
	if err == nil || !r.lost && r.tc == nil {
		return err
	}
	return r.m.nodeLost(r.ctx, r.s, r.n, r.tc, err, r.lost, r.write)
}

// routedRow runs its query when scanned.
type routedRow struct {
	q    *Querier
	ctx  context.Context
	sql  string
	args []any
}

func (r *routedRow) Scan(dest ...any) error {
	for run := 0; ; run++ {
		s := r.q.m.snap.Load()
		conn, n, err := r.q.m.acquireFast(r.ctx, r.q.t, r.q.o)
		if err != nil {
			return err
		}
		sb := onStandby(conn, n)
		_, err = guarded(conn, func() (struct{}, error) { return struct{}{}, conn.QueryRow(r.ctx, r.sql, r.args...).Scan(dest...) })
		lost, tc := conn.Conn().IsClosed(), lostConn(conn, err)
		conn.Release()
		if errors.Is(err, pgx.ErrNoRows) || !r.q.retry(r.ctx, run, err, lost, sb) {
			return r.q.m.nodeLost(r.ctx, s, n, tc, err, lost, r.q.t == targetMaster)
		}
	}
}

// routedBatch releases its connection when closed.
type routedBatch struct {
	pgx.BatchResults
	conn *pgxpool.Conn
	once sync.Once
	tx   *routedTx // the transaction the batch began, sharing once
}

// txOf returns the transaction a pgx v5.12+ batch began, nil otherwise (and
// on older pgx, whose BatchResults has no Tx).
func txOf(br pgx.BatchResults) pgx.Tx {
	if b, ok := br.(interface{ Tx() pgx.Tx }); ok {
		return b.Tx()
	}
	return nil
}

// Close reads the remaining results and releases the connection, unless the
// batch began a transaction (pgx's Batch.BeginTx, from v5.12): that
// transaction keeps the connection until it commits or rolls back.
func (b *routedBatch) Close() error {
	err := b.BatchResults.Close()
	if b.tx == nil || err != nil {
		b.once.Do(b.conn.Release)
	}
	return err
}

// Tx returns the transaction the batch began, if any, wrapped so that its
// end releases the connection (pgx v5.12 and newer; nil before).
func (b *routedBatch) Tx() pgx.Tx {
	if b.tx == nil {
		return nil
	}
	return b.tx
}

type errBatchResults struct{ err error }

func (e errBatchResults) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, e.err }
func (e errBatchResults) Query() (pgx.Rows, error)         { return nil, e.err }
func (e errBatchResults) QueryRow() pgx.Row                { return errRow{e.err} }
func (e errBatchResults) Close() error                     { return e.err }

// Tx is part of pgx.BatchResults from pgx v5.12 on: no transaction was begun.
func (e errBatchResults) Tx() pgx.Tx { return nil }

type errRow struct{ err error }

func (e errRow) Scan(...any) error { return e.err }

// routedTx releases its connection when the transaction ends.
type routedTx struct {
	pgx.Tx
	conn *pgxpool.Conn
	once *sync.Once
}

func (t *routedTx) Commit(ctx context.Context) error {
	err := t.Tx.Commit(ctx)
	t.once.Do(t.conn.Release)
	return err
}

func (t *routedTx) Rollback(ctx context.Context) error {
	err := t.Tx.Rollback(ctx)
	t.once.Do(t.conn.Release)
	return err
}
