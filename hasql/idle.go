package hasql

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// idleCheckAfter is how long a pooled connection must have been idle for
// its socket to be looked at before it is handed out (see
// shouldPingHook). Below it, a connection is handed out as it is: an
// acquire that follows a release costs nothing more than pgxpool's.
const idleCheckAfter = time.Millisecond

// shouldPingHook returns the ShouldPing hook of n's pool. A connection idle
// for idleCheckAfter or more has its socket read without blocking and
// without a round trip: a server that ended the session while it was idle
// (idle_session_timeout, pg_terminate_backend, a shutdown or restart, a
// pooler that went away) left its FATAL message, or the end of the stream,
// there. Such a connection is pinged, which fails, and pgxpool destroys it
// and hands out another: the caller never sees the dead session. Otherwise
// the pool's own rule applies (user, the hook set on PoolConfig or by
// ConfigureNode; pgxpool's default when nil: a ping after a second idle).
func (n *node) shouldPingHook(user func(context.Context, pgxpool.ShouldPingParams) bool) func(context.Context, pgxpool.ShouldPingParams) bool {
	return func(ctx context.Context, p pgxpool.ShouldPingParams) bool {
		if n.pastEnd(p.Conn) {
			return false // PrepareConn refuses it, no ping first
		}
		if p.IdleDuration >= idleCheckAfter && sessionEndedWhileIdle(p.Conn) {
			return true
		}
		if user != nil {
			return user(ctx, p)
		}
		return p.IdleDuration > time.Second
	}
}

// sessionEndedWhileIdle reports whether an idle connection's socket has
// something to read (the server does not speak first on an idle session
// except to end it, or to deliver a notification, which the ping then
// reads) or is at its end. It reads without blocking and consumes nothing.
func sessionEndedWhileIdle(conn *pgx.Conn) bool {
	tc := trackedOf(conn)
	if tc == nil || tc.raw == nil {
		return false
	}
	return socketReadable(tc.raw)
}

// trackedOf returns the tracked network connection under conn (under its
// TLS layer, if any), nil when there is none.
func trackedOf(conn *pgx.Conn) *trackedConn {
	return trackedNet(conn.PgConn().Conn())
}

// trackedNet returns the tracked network connection nc is, or holds under
// its TLS layer; nil when there is none.
func trackedNet(nc net.Conn) *trackedConn {
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	tc, _ := nc.(*trackedConn)
	return tc
}
