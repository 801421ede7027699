// Package stmtwatch carries, from hasql to failover, the statements sent on
// a connection of a Manager's pool: failover.RunInTx sees what fn sends
// through tx.Conn() as well as through tx.
package stmtwatch

import "github.com/jackc/pgx/v5"

// Watch, set by hasql, has f called with the SQL of each statement sent on
// conn, before it is sent, until stop is called: a statement sent through
// pgx as pgx traces it (a batch's queries joined in one string, a
// statement prepared under a name as its SQL), one sent through
// conn.PgConn() as read from the wire (the SQL of a statement the wire
// does not show, a prepared one pgx did not prepare, is given as
// "COMMIT"; so is pgconn's ExecBatch under TLS, unless pgx traced it).
// ok is false, and f never called, when conn is not of a Manager's pool.
var Watch func(conn *pgx.Conn, f func(sql string)) (stop func(), ok bool)

// Ended, set by hasql, has f called with the command tag and error of each
// statement pgx traced on conn as it ends (one sent through pgx, not
// through conn.PgConn(); a batch's queries one by one), until stop is
// called: what the server answered a COMMIT (ROLLBACK for a transaction
// that had failed). ok is false, and f never called, when conn is not of
// a Manager's pool.
var Ended func(conn *pgx.Conn, f func(tag string, err error)) (stop func(), ok bool)
