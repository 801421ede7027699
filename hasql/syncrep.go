package hasql

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrSyncRepCancelled is failover.RunInTx's error for a COMMIT that
// succeeded after its wait for synchronous standbys was cancelled (see
// SyncRepCancelled): committed on the master alone.
var ErrSyncRepCancelled = errors.New("hasql: the COMMIT's wait for synchronous standbys was cancelled: committed on the master, acknowledged by no synchronous standby")

// SyncRepCancelled reports whether the server answered the last statement
// run on conn, a COMMIT, with the warning that its wait for synchronous
// standbys was cancelled: a cancel request reached it while it waited
// (pg_cancel_backend, a pooler's, pgx's CancelRequestContextWatcherHandler).
// The COMMIT then succeeds, but the transaction is committed on the master
// alone, acknowledged by no synchronous standby: a failover to one may lose
// it. failover.RunInTx reports such a COMMIT as of unknown outcome.
//
// conn must be a connection of one of the Manager's pools (an acquired
// one, or a transaction's tx.Conn()); for any other it reports false. The
// warning is known by its text, which the server writes in its
// lc_messages: a server that speaks another language than English is not
// understood (false).
func SyncRepCancelled(conn *pgx.Conn) bool {
	if conn == nil {
		return false
	}
	tc := trackedOf(conn)
	return tc != nil && tc.syncRepCancelled.Load()
}

// noteSyncRepCancel returns the OnNotice of a node's pool: it notes on
// the connection the warning of a cancelled wait for synchronous standbys,
// then calls user's.
func noteSyncRepCancel(user func(*pgconn.PgConn, *pgconn.Notice)) func(*pgconn.PgConn, *pgconn.Notice) {
	return func(pc *pgconn.PgConn, n *pgconn.Notice) {
		if isSyncRepCancel(n) {
			if tc := trackedNet(pc.Conn()); tc != nil {
				tc.syncRepCancelled.Store(true)
			}
		}
		if user != nil {
			user(pc, n)
		}
	}
}

// isSyncRepCancel reports whether n is PostgreSQL's warning that a
// COMMIT's wait for synchronous standbys was cancelled ("canceling wait
// for synchronous replication due to user request", 9.6 to 17).
func isSyncRepCancel(n *pgconn.Notice) bool {
	sev := n.SeverityUnlocalized
	if sev == "" {
		sev = n.Severity
	}
	return sev == "WARNING" && strings.HasPrefix(n.Message, "canceling wait for synchronous replication")
}
