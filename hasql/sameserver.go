package hasql

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// A node is one server: the one its checks reach. When the node's host is
// a name, the name is resolved by the check connection and by every
// connection of the pool, DB() and Listen, each on its own, and a name
// that moved (a DNS record, a failover script) would let them reach
// different servers: the checks see the new master while a connection
// opened after the name went back reaches the old one, which would take
// the writes routed to the node's role. So every connection but the
// check's asks the server, once authenticated, when it started: a server
// that did not start when the one the checks last saw did is another one
// (or the same one restarted since), and the connection is refused. The
// check connection then connects afresh; its next check shows which server
// the name reaches now, and the role follows. A name whose addresses all
// reach one server (two poolers, two addresses of a host) is one server.

// startSQL reads the server's postmaster start time in microseconds since
// the Unix epoch, as the checks see it (checker.Result.StartTime).
const startSQL = `SELECT (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::int8`

// sameServer wraps the pool's ValidateConnect (the user's, or
// target_session_attrs', run first) with the check that the connection
// reached the server the node's checks did.
func (n *node) sameServer(user pgconn.ValidateConnectFunc) pgconn.ValidateConnectFunc {
	return func(ctx context.Context, pc *pgconn.PgConn) error {
		if user != nil {
			if err := user(ctx, pc); err != nil {
				return err
			}
		}
		want := n.serverStart.Load()
		if want == 0 {
			return nil // not checked yet: the node has no role
		}
		rr := pc.ExecParams(ctx, startSQL, nil, nil, nil, nil).Read()
		if rr.Err != nil {
			return rr.Err
		}
		if len(rr.Rows) != 1 || len(rr.Rows[0]) != 1 {
			return fmt.Errorf("hasql: %s: the server's start time: %d rows", n.cfg.Addr, len(rr.Rows))
		}
		got, err := strconv.ParseInt(string(rr.Rows[0][0]), 10, 64)
		if err != nil {
			return fmt.Errorf("hasql: %s: the server's start time %q: %w", n.cfg.Addr, rr.Rows[0][0], err)
		}
		if d := got - want; d < -1 || d > 1 { // a microsecond of rounding, on servers older than 14
			n.redial.Store(true)
			n.trigger()
			return fmt.Errorf("hasql: %s reaches a server started at %s, not the one the node's checks reach (started at %s): not used until a check runs there",
				n.cfg.Addr, time.UnixMicro(got).UTC().Format(time.RFC3339Nano), time.UnixMicro(want).UTC().Format(time.RFC3339Nano))
		}
		return nil
	}
}
