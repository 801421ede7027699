package hasql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
)

// TargetAuto: one database/sql connection (autoConn) over up to two server
// connections, one per side, each from the connector DB uses for that
// target, so that both keep DB's re-validation.

type readOnlyKey struct{}

// ReadOnly marks ctx so that a statement run with it outside a
// transaction, through a *sql.DB made by DB(TargetAuto), goes to a
// replica:
//
//	db := m.DB(hasql.TargetAuto)
//	rows, err := db.QueryContext(hasql.ReadOnly(ctx), "SELECT ...")
//
// Transactions follow their own TxOptions.ReadOnly, not the mark.
func ReadOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, readOnlyKey{}, true)
}

// IsReadOnly reports whether ctx was marked with ReadOnly.
func IsReadOnly(ctx context.Context) bool {
	v, _ := ctx.Value(readOnlyKey{}).(bool)
	return v
}

func (m *Manager) autoDB(opts []ReplicaOption) *sql.DB {
	var o *replicaOptions
	if len(opts) > 0 {
		o = new(replicaOptions)
		applyOptions(o, opts)
	}
	return sql.OpenDB(&autoConnector{
		master:  m.connector(targetMaster, nil),
		replica: m.connector(targetReplica, o),
	})
}

type autoConnector struct {
	master, replica *dbConnector
}

// Connect opens nothing yet: each side connects on its first statement,
// with that statement's context.
func (c *autoConnector) Connect(ctx context.Context) (driver.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &autoConn{c: c}, nil
}

func (c *autoConnector) Driver() driver.Driver { return c.master.Driver() }

// autoConn is one database/sql connection of a TargetAuto *sql.DB.
// database/sql uses a connection from one goroutine at a time, so its
// fields need no lock.
type autoConn struct {
	c               *autoConnector
	master, replica driver.Conn // opened on first use
	tx              driver.Conn // the side of the transaction in progress
	closed          bool
	// resetMaster, resetReplica: the side was handed out again by
	// database/sql (ResetSession) and is re-validated before its next use
	// (see side).
	resetMaster, resetReplica bool
}

// errAfterInDB refuses After in DB: a token is one request's, a *sql.DB
// every request's.
var errAfterInDB = errors.New("hasql: DB: After is for one request's reads, not a *sql.DB shared by all; read through m.Replica(hasql.After(tok))")

var errAutoClosed = errors.New("hasql: DB(TargetAuto): connection closed")

// side returns the server connection for a statement: the transaction's,
// else the replica's for a read, else the master's, connecting it first if
// needed.
func (a *autoConn) side(ctx context.Context, read bool) (driver.Conn, error) {
	if a.closed {
		return nil, errAutoClosed
	}
	if a.tx != nil {
		return a.tx, nil
	}
	p, c, reset := &a.master, a.c.master, &a.resetMaster
	if read {
		p, c, reset = &a.replica, a.c.replica, &a.resetReplica
	}
	if *p != nil && *reset {
		*reset = false
		if err := (*p).(driver.SessionResetter).ResetSession(ctx); err != nil {
			(*p).Close()
			*p = nil
		}
	}
	if *p == nil {
		conn, err := c.Connect(ctx)
		if err != nil {
			return nil, err
		}
		*p = conn
	}
	return *p, nil
}

func (a *autoConn) Prepare(query string) (driver.Stmt, error) {
	return a.PrepareContext(context.Background(), query)
}

// PrepareContext prepares query on the side the statement would run on
// now (so that an error in it is found here), and returns a statement that
// picks its side again each time it runs: database/sql hands the same
// statement to a transaction begun later on this connection (tx.Stmt, as
// sqlc's WithTx does), which must run it in the transaction, not on the
// side it was prepared on.
func (a *autoConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	conn, err := a.side(ctx, IsReadOnly(ctx))
	if err != nil {
		return nil, err
	}
	st, err := conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return &autoStmt{a: a, query: query, on: []sideStmt{{conn, st}}}, nil
}

// autoStmt is a statement of an autoConn, prepared on each side it runs
// on, on first use there.
type autoStmt struct {
	a     *autoConn
	query string
	on    []sideStmt // at most one per server connection the autoConn has had open
}

type sideStmt struct {
	conn driver.Conn
	st   driver.Stmt
}

// stmt returns the statement prepared on the side a statement with ctx
// runs on now, preparing it there first if needed. Statements of server
// connections the autoConn no longer holds are closed.
func (s *autoStmt) stmt(ctx context.Context) (driver.Stmt, error) {
	conn, err := s.a.side(ctx, IsReadOnly(ctx))
	if err != nil {
		return nil, err
	}
	kept := s.on[:0]
	var found driver.Stmt
	for _, o := range s.on {
		switch {
		case o.conn == conn:
			found = o.st
			kept = append(kept, o)
		case o.conn == s.a.master || o.conn == s.a.replica:
			kept = append(kept, o)
		default:
			o.st.Close() // its connection was closed (see ResetSession)
		}
	}
	clear(s.on[len(kept):])
	s.on = kept
	if found != nil {
		return found, nil
	}
	st, err := conn.(driver.ConnPrepareContext).PrepareContext(ctx, s.query)
	if err != nil {
		return nil, err
	}
	s.on = append(s.on, sideStmt{conn, st})
	return st, nil
}

func (s *autoStmt) Close() error {
	var errs []error
	for _, o := range s.on {
		if o.conn == s.a.master || o.conn == s.a.replica {
			errs = append(errs, o.st.Close())
		}
	}
	s.on = nil
	return errors.Join(errs...)
}

// NumInput is -1: the sides' statements count their inputs.
func (s *autoStmt) NumInput() int { return -1 }

func (s *autoStmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), named(args))
}

func (s *autoStmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), named(args))
}

// named numbers args as database/sql does for a driver without names.
func named(args []driver.Value) []driver.NamedValue {
	nv := make([]driver.NamedValue, len(args))
	for i, v := range args {
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return nv
}

func (s *autoStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	st, err := s.stmt(ctx)
	if err != nil {
		return nil, err
	}
	return st.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (s *autoStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	st, err := s.stmt(ctx)
	if err != nil {
		return nil, err
	}
	return st.(driver.StmtQueryContext).QueryContext(ctx, args)
}

// CheckNamedValue passes every argument through to pgx, as the
// connection's does.
func (s *autoStmt) CheckNamedValue(*driver.NamedValue) error { return nil }

func (a *autoConn) Begin() (driver.Tx, error) {
	return a.BeginTx(context.Background(), driver.TxOptions{})
}

func (a *autoConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	conn, err := a.side(ctx, opts.ReadOnly)
	if err != nil {
		return nil, err
	}
	tx, err := conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	a.tx = conn
	return &autoTx{Tx: tx, a: a}, nil
}

func (a *autoConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	conn, err := a.side(ctx, IsReadOnly(ctx))
	if err != nil {
		return nil, err
	}
	return conn.(driver.ExecerContext).ExecContext(ctx, query, args)
}

func (a *autoConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	conn, err := a.side(ctx, IsReadOnly(ctx))
	if err != nil {
		return nil, err
	}
	return conn.(driver.QueryerContext).QueryContext(ctx, query, args)
}

func (a *autoConn) Ping(ctx context.Context) error {
	conn, err := a.side(ctx, IsReadOnly(ctx))
	if err != nil {
		return err
	}
	return conn.(driver.Pinger).Ping(ctx)
}

// CheckNamedValue passes every argument through to pgx, as pgx's own
// driver does.
func (a *autoConn) CheckNamedValue(*driver.NamedValue) error { return nil }

// ResetSession marks each open side to be re-validated as DB does before
// its next statement (see side): a side whose node lost its role (or whose
// connection broke) is closed there and opened again; the other side
// stays. Not here, on both: a side that hangs (its server paused, its
// host gone) would hold a statement meant for the other until the
// caller's deadline, and close the healthy side with it.
func (a *autoConn) ResetSession(ctx context.Context) error {
	if a.closed || a.tx != nil {
		return driver.ErrBadConn
	}
	a.resetMaster, a.resetReplica = a.master != nil, a.replica != nil
	return nil
}

func (a *autoConn) IsValid() bool { return !a.closed }

func (a *autoConn) Close() error {
	a.closed = true
	var errs []error
	for _, p := range []*driver.Conn{&a.master, &a.replica} {
		if *p != nil {
			errs = append(errs, (*p).Close())
			*p = nil
		}
	}
	return errors.Join(errs...)
}

// autoTx ends the transaction's hold on its side.
type autoTx struct {
	driver.Tx
	a *autoConn
}

func (t *autoTx) Commit() error {
	t.a.tx = nil
	return t.Tx.Commit()
}

func (t *autoTx) Rollback() error {
	t.a.tx = nil
	return t.Tx.Rollback()
}
