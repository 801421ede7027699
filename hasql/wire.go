package hasql

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// What the tracer said of the messages a watched connection sends next
// (trackedConn.sent): a message whose statement the wire does not show
// (pgx's statement cache runs one by a name whose SQL only pgx keeps) is
// skipped when the tracer read its statement.
const (
	sentUntraced = iota // nothing traced under way
	sentTraced          // a traced statement began: the next statement run is its own
	sentBatch           // a traced batch is under way: its statements were read with it
)

// unknownStatement is what the watch is given for a statement the wire
// does not show the SQL of (a name neither pgx nor the wire saw
// prepared, a message cut short), when the tracer did not read it: it may
// commit.
const unknownStatement = "COMMIT"

// maxPreparedSQL bounds the SQL kept for one prepared name (see parsed):
// a name prepared again and again with other SQL reads as
// unknownStatement past it.
const maxPreparedSQL = 64 << 10

// isCacheName reports whether name is one of pgx's statement cache's:
// "stmtcache_" and 48 hex digits (a digest of the SQL, which the tracer
// reads with every use). Any other name, one of the application's that
// merely begins alike included, is the application's.
func isCacheName[T string | []byte](name T) bool {
	const prefix = "stmtcache_"
	if len(name) != len(prefix)+48 || string(name[:len(prefix)]) != prefix {
		return false
	}
	for i := len(prefix); i < len(name); i++ {
		if c := name[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// wireFrontend wraps pgx's own frontend (not one of the user's) so that a
// pool connection's frontend writes through a wireWriter: what the
// connection sends through conn.PgConn(), past pgx's tracer, is read too
// while a watch is set (stmtwatch). The writer is the connection made
// after TLS, so it sees the messages as sent. pgconn's ExecBatch writes
// past it, to the connection: see unframed.
func wireFrontend(build pgconn.BuildFrontendFunc) pgconn.BuildFrontendFunc {
	if build == nil {
		build = pgproto3.NewFrontend
	}
	return func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		if nc, ok := w.(net.Conn); ok {
			if tc := trackedNet(nc); tc != nil {
				_, isTLS := nc.(*tls.Conn)
				tc.tlsAbove.Store(isTLS)
				tc.wired.Store(true)
				w = &wireWriter{Writer: w, tc: tc}
			}
		}
		return build(r, w)
	}
}

// wireWriter reads the messages a connection sends before they go out.
type wireWriter struct {
	io.Writer
	tc *trackedConn
}

func (w *wireWriter) Write(p []byte) (int, error) {
	w.tc.readSent(p)
	w.tc.framed.Store(true)
	defer w.tc.framed.Store(false)
	return w.Writer.Write(p)
}

// unframed reads a write to the connection that did not come through its
// frontend (see wireFrontend): pgconn's ExecBatch writes its messages
// past the frontend (pgx's batches in the exec mode, or fn's own call).
// Without TLS they are read as the frontend's are. Under TLS the bytes are
// records that cannot be read: the unnamed statement is forgotten, and,
// while watched, the write is taken for a possible COMMIT (see
// takeUnframed) once the connection reads or writes next, or the watch
// ends, unless pgx's tracer read it as a batch under way: TLS's close
// alert, written past the frontend too (after a Terminate, or when pgconn
// closes the connection itself, as on a FATAL error), is followed by a
// close, never a read.
func (tc *trackedConn) unframed(p []byte) {
	if tc.terminated.Load() {
		return
	}
	if !tc.tlsAbove.Load() {
		tc.readSent(p)
		return
	}
	tc.parsedUnnamed(nil, nil, false, false)
	if tc.watch.Load() != nil && tc.sent.Load() != sentBatch {
		tc.unframedPending.Store(true)
	}
}

// takeUnframed gives the watch a write past the frontend that could not
// be read (see unframed), if one is pending: the connection reads or
// writes next, or the watch ends.
func (tc *trackedConn) takeUnframed() {
	if !tc.unframedPending.Load() || !tc.unframedPending.CompareAndSwap(true, false) {
		return
	}
	if w := tc.watch.Load(); w != nil && !tc.terminated.Load() {
		(*w)(unknownStatement)
	}
}

// readSent reads the messages in p. It keeps the SQL of the statements
// prepared under a name (Parse, Close), and, while a watch is set, gives
// it the statements p runs, as one string (they go out together, as a
// batch does; see began): a simple query's text, or the statement an
// extended query's Bind runs (the unnamed one last parsed, see
// parsedUnnamed, or one prepared under a name on the connection). A statement the tracer
// read is given again when the wire shows it (noting one twice changes
// nothing); one whose SQL p does not show is given as unknownStatement
// unless the tracer read it. p holds whole messages (pgproto3's Frontend
// writes what it buffered, message by message); a message cut short is
// read as unknownStatement.
func (tc *trackedConn) readSent(p []byte) {
	var f func(string)
	if w := tc.watch.Load(); w != nil {
		f = *w
	}
	var sent sentStatements
	syncPending := tc.syncPending.Load()
	for len(p) > 0 {
		if len(p) < 5 {
			sent.add(tc, f, "", false)
			break
		}
		typ := p[0]
		n := int(binary.BigEndian.Uint32(p[1:5]))
		if n < 4 || n-4 > len(p)-5 {
			if typ != 'd' {
				sent.add(tc, f, "", false)
			}
			break
		}
		body := p[5 : 5+n-4]
		p = p[5+n-4:]
		pending := syncPending
		switch typ {
		case 'S', 'Q': // Sync; a simple query ends with its own
			syncPending = false
		case 'H', 'd', 'c', 'f', 'X': // Flush, copy data, copy done or fail, Terminate
		default:
			syncPending = true
		}
		switch typ {
		case 'X': // Terminate
			tc.terminated.Store(true)
		case 'P': // Parse: a name, the SQL
			name, rest, ok := cstring(body)
			if !ok {
				continue
			}
			sql, _, sqlOK := cstring(rest)
			switch {
			case len(name) == 0:
				tc.parsedUnnamed(f, sql, sqlOK, pending)
			case sqlOK:
				tc.parsed(name, sql)
			default:
				tc.parsed(name, []byte(unknownStatement))
			}
		case 'C': // Close: 'S' and a statement's name, or 'P' and a portal's
			if len(body) > 0 && body[0] == 'S' {
				if name, _, ok := cstring(body[1:]); ok && len(name) > 0 {
					tc.closedStatement(name)
				}
			}
		case 'Q': // Query: the SQL; it drops the unnamed statement
			tc.parsedUnnamed(nil, nil, false, false)
			if f != nil {
				sql, _, ok := cstring(body)
				sent.add(tc, f, string(sql), ok)
			}
		case 'B': // Bind: a portal, a statement name
			if f == nil {
				continue
			}
			_, rest, ok := cstring(body)
			var name []byte
			if ok {
				name, _, ok = cstring(rest)
			}
			switch {
			case !ok:
				sent.add(tc, f, "", false)
			case len(name) == 0:
				if u := tc.unnamed.Load(); u != nil {
					sent.add(tc, f, *u, true)
				} else {
					sent.add(tc, f, "", false)
				}
			default:
				sql, known := tc.preparedSQL(string(name))
				if !known && !isCacheName(name) {
					// A name of the application's the connection did not
					// keep (more than maxPrepared): the tracer read the
					// name, not what it runs, which may commit.
					sql, known = unknownStatement, true
				}
				sent.add(tc, f, sql, known)
			}
		}
	}
	if syncPending != tc.syncPending.Load() {
		tc.syncPending.Store(syncPending)
	}
	if f != nil && sent.n > 0 {
		f(sent.String())
	}
}

// parsedUnnamed notes the unnamed statement parsed (or, sql not ok,
// dropped) on the connection. Its SQL is kept while watched only (f
// set), so that an unwatched connection allocates nothing: a Bind of one
// parsed unwatched reads as unknownStatement, unless the tracer read it.
// The unnamed statement lasts until the next Parse of it or simple
// query; pgx parses it and runs it in one write or two (see
// pgx.QueryExecModeDescribeExec), pgconn's Prepare("") and
// ExecPrepared("") in two. A Parse after other messages not yet ended by
// a Sync (pending) may be skipped by the server (an error among them
// skips the rest up to the Sync): the statement then reads as either.
func (tc *trackedConn) parsedUnnamed(f func(string), sql []byte, ok, pending bool) {
	if f == nil || !ok {
		if tc.unnamed.Load() != nil {
			tc.unnamed.Store(nil)
		}
		return
	}
	s := string(sql)
	if pending {
		switch old := tc.unnamed.Load(); {
		case old == nil:
			s = unknownStatement // what it was is not known
		case *old != s:
			s = *old + "\n;\n" + s
		}
	}
	if len(s) > maxPreparedSQL {
		s = unknownStatement
	}
	tc.unnamed.Store(&s)
}

// sentStatements gathers the statements of one write for the watch.
type sentStatements struct {
	strings.Builder
	n int
}

// add takes the SQL of a statement about to be sent, when readable; an
// unreadable one is taken as unknownStatement unless the tracer read it.
// f nil: no watch.
func (s *sentStatements) add(tc *trackedConn, f func(string), sql string, readable bool) {
	if f == nil {
		return
	}
	traced := tc.sent.Load()
	if traced == sentTraced {
		tc.sent.Store(sentUntraced) // the traced statement's own message
	}
	switch {
	case readable:
	case traced == sentUntraced:
		sql = unknownStatement
	default:
		return
	}
	if s.n > 0 {
		s.WriteString("\n;\n")
	}
	s.WriteString(sql)
	s.n++
}

// parsed notes a statement prepared under name on the connection, as
// sent: a name prepared again with other SQL reads as either (the server
// may have refused the second; pgx's own Prepare, once the server
// accepted it, keeps the one, see prepare). pgx's statement cache's
// names are left to the tracer.
func (tc *trackedConn) parsed(name, sql []byte) {
	if isCacheName(name) {
		return
	}
	tc.prepMu.Lock()
	defer tc.prepMu.Unlock()
	old, ok := tc.prepared[string(name)]
	switch {
	case ok && old.sql == string(sql):
		if old.closed {
			tc.setPrepared(string(name), prepared{sql: old.sql}, old)
		}
	case ok:
		u := old.sql + "\n;\n" + string(sql)
		if len(u) > maxPreparedSQL {
			u = unknownStatement
		}
		tc.setPrepared(string(name), prepared{sql: u}, old)
	case tc.roomForPrepared():
		p := prepared{sql: string(sql)}
		if len(sql) > maxPreparedSQL {
			p.sql = unknownStatement
		}
		tc.setPrepared(string(name), p, old)
	}
}

// closedStatement notes a Close of the statement prepared under name: it
// is kept (the Close may not run: a pipeline's statements after an error
// are skipped) until room is needed.
func (tc *trackedConn) closedStatement(name []byte) {
	tc.prepMu.Lock()
	defer tc.prepMu.Unlock()
	if old, ok := tc.prepared[string(name)]; ok && !old.closed {
		tc.setPrepared(string(name), prepared{sql: old.sql, closed: true}, old)
	}
}

// cstring splits b at its first NUL.
func cstring(b []byte) (s, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}
