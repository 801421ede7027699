// Package stmtwatch carries, from hasql to failover, the statements sent on
// a connection of a Manager's pool: failover.RunInTx sees what fn sends
// through tx.Conn() as well as through tx.
package stmtwatch

import "github.com/jackc/pgx/v5"

// Watch, set by hasql, has f called with the SQL of each statement sent on
// conn (each query of a batch; a prepared statement's name when run by
// it), before it is sent, until stop is called. ok is false, and f never
// called, when conn is not of a Manager's pool.
var Watch func(conn *pgx.Conn, f func(sql string)) (stop func(), ok bool)
