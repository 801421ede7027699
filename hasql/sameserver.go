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
		var uerr error
		if user != nil {
			// Authenticated and ready: the user's ValidateConnect reads
			// pgx's bound (see maxPreAuthMessage); pgxha's own query, the
			// connect's.
			n.setReadBound(pc, pgxMaxMessage)
			var np *pgconn.NotPreferredError
			if uerr = user(ctx, pc); uerr != nil && !errors.As(uerr, &np) {
				return uerr
			}
			n.setReadBound(pc, maxPreAuthMessage)
		}
		got, err := n.serverStartOf(ctx, pc)
		if err != nil {
			return err
		}
		// The pool's connection reads pgx's bound from here on, in
		// AfterConnect too.
		n.setReadBound(pc, pgxMaxMessage)
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

// setReadBound sets the largest message pc, a connection of n's pool,
// reads, when n bounds them (see boundedFrontend).
func (n *node) setReadBound(pc *pgconn.PgConn, size int) {
	if n.unboundAfterConnect {
		pc.Frontend().SetMaxBodyLen(size)
	}
}

// serverStartOf reads the start time of the server pc reached, in
// microseconds since the Unix epoch. The answer is one row: at a second,
// pc is closed, the rest of what the server sends unread.
func (n *node) serverStartOf(ctx context.Context, pc *pgconn.PgConn) (int64, error) {
	rr := pc.ExecParams(ctx, startSQL, nil, nil, nil, nil)
	rows, cols, size := 0, 0, 0
	var got int64
	var perr error
	for rr.NextRow() {
		if rows++; rows > 1 {
			pc.Conn().Close() // pgconn's next read fails, and it closes pc
			rr.Close()
			return 0, fmt.Errorf("hasql: %s: the server's start time: more than one row", n.cfg.Addr)
		}
		v := rr.Values()
		if cols = len(v); cols == 1 {
			got, perr = strconv.ParseInt(string(v[0]), 10, 64)
			size = len(v[0])
		}
	}
	if _, err := rr.Close(); err != nil {
		return 0, err
	}
	if rows != 1 || cols != 1 {
		return 0, fmt.Errorf("hasql: %s: the server's start time: %d rows", n.cfg.Addr, rows)
	}
	if perr != nil {
		// Not quoted: what a server sends goes into no error (see scrubConnect).
		return 0, fmt.Errorf("hasql: %s: the server's start time is not a number (%d bytes)", n.cfg.Addr, size)
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
