package hasql

import (
	"context"
	"errors"
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
// reached the server the node's checks did. A connection the user's check
// does not prefer (*pgconn.NotPreferredError: prefer-standby), which pgconn
// keeps when no other host is preferred, is compared all the same. The
// start time read stays with the connection (see reaches). Before the
// node's first check there is nothing to compare with: the first check
// closes the connections whose server is another (see serverChanged).
func (n *node) sameServer(user pgconn.ValidateConnectFunc) pgconn.ValidateConnectFunc {
	return func(ctx context.Context, pc *pgconn.PgConn) error {
		if n.unboundAfterConnect {
			// Authenticated and ready: the pool's connection reads pgx's
			// bound from here on, in the user's ValidateConnect and
			// AfterConnect too (see maxPreAuthMessage).
			pc.Frontend().SetMaxBodyLen(pgxMaxMessage)
		}
		var uerr error
		if user != nil {
			var np *pgconn.NotPreferredError
			if uerr = user(ctx, pc); uerr != nil && !errors.As(uerr, &np) {
				return uerr
			}
		}
		got, err := n.serverStartOf(ctx, pc)
		if err != nil {
			return err
		}
		// Kept before the node's server is read: a check that finds
		// another server after this read closes the connection (see
		// serverChanged); one that found it before is what this one
		// compares with.
		pc.CustomData()[customDataStart] = got
		if tc := trackedNet(pc.Conn()); tc != nil {
			tc.start.Store(got)
		} else {
			// Under a wrapper of the user's (AfterNetConnect), which the
			// checks cannot look under: the first check resets the pool.
			n.untrackedEarly.Store(true)
		}
		want := n.serverStart.Load()
		if want == 0 {
			return uerr // not checked yet: compared by the first check
		}
		if !sameStart(got, want) {
			n.redial.Store(true)
			n.trigger()
			return fmt.Errorf("hasql: %s reaches a server started at %s, not the one the node's checks reach (started at %s): not used until a check runs there",
				n.cfg.Addr, time.UnixMicro(got).UTC().Format(time.RFC3339Nano), time.UnixMicro(want).UTC().Format(time.RFC3339Nano))
		}
		return uerr
	}
}

// customDataStart is the key, in a connection's pgconn.CustomData, of the
// start time of the server it reached (see sameServer).
const customDataStart = "pgxha.start"

// reaches reports whether pc, a connection of n, reaches the server n's
// checks reach now: the name may have moved since it was made. True when
// either is unknown.
func (n *node) reaches(pc *pgconn.PgConn) bool {
	got, ok := pc.CustomData()[customDataStart].(int64)
	want := n.serverStart.Load()
	return !ok || want == 0 || sameStart(got, want)
}

// serverStartOf reads the start time of the server pc reached, in
// microseconds since the Unix epoch.
func (n *node) serverStartOf(ctx context.Context, pc *pgconn.PgConn) (int64, error) {
	rr := pc.ExecParams(ctx, startSQL, nil, nil, nil, nil).Read()
	if rr.Err != nil {
		return 0, rr.Err
	}
	if len(rr.Rows) != 1 || len(rr.Rows[0]) != 1 {
		return 0, fmt.Errorf("hasql: %s: the server's start time: %d rows", n.cfg.Addr, len(rr.Rows))
	}
	got, err := strconv.ParseInt(string(rr.Rows[0][0]), 10, 64)
	if err != nil {
		// Not quoted: what a server sends goes into no error (see scrubConnect).
		return 0, fmt.Errorf("hasql: %s: the server's start time is not a number (%d bytes)", n.cfg.Addr, len(rr.Rows[0][0]))
	}
	return got, nil
}

// sameStart reports whether two start times are one server's: a
// microsecond of rounding, on servers older than 14.
func sameStart(got, want int64) bool {
	d := got - want
	return d >= -1 && d <= 1
}

// serverChanged follows a check that found another server at n than the
// one before (first: the node's first check), once start, the new one's
// start time, is stored: every connection that reached another server is
// closed, in use or not, made before the change or being made across it
// (compared with the server before, and not yet handed out): a replica's
// read, or a write, must not run on a server the node's checks no longer
// reach. After the first check, connections made before it were compared
// with nothing. The pool's idle connections are dropped too, except at the
// first check, where only those pgxha cannot look under go (a wrapper of
// the user's: all of them). It returns how many it closed.
func (n *node) serverChanged(start int64, first bool) int {
	if !first || n.untrackedEarly.Load() {
		n.pool.Reset()
	}
	return n.closeOtherServers(start)
}

// closeOtherServers closes n's connections that keep the start time of
// another server than the one started at start.
func (n *node) closeOtherServers(start int64) int {
	return n.conns.closeIf(func(c *trackedConn) bool {
		s := c.start.Load()
		return s != 0 && !sameStart(s, start)
	})
}

// startMicro is t in microseconds since the Unix epoch, as the node's
// serverStart keeps it: 0 for the zero time (a checker that does not read
// it).
func startMicro(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}
