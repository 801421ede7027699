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
	p, c := &a.master, a.c.master
	if read {
		p, c = &a.replica, a.c.replica
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

func (a *autoConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	conn, err := a.side(ctx, IsReadOnly(ctx))
	if err != nil {
		return nil, err
	}
	return conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

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

// ResetSession re-validates each side as DB does: a side whose node lost
// its role (or whose connection broke) is closed, and opened again on its
// next statement; the other side stays.
func (a *autoConn) ResetSession(ctx context.Context) error {
	if a.closed || a.tx != nil {
		return driver.ErrBadConn
	}
	for _, p := range []*driver.Conn{&a.master, &a.replica} {
		if *p == nil {
			continue
		}
		if err := (*p).(driver.SessionResetter).ResetSession(ctx); err != nil {
			(*p).Close()
			*p = nil
		}
	}
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
