package hasql

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// What the tracer said of the messages a watched connection sends next
// (trackedConn.sent): the watch reads the statements pgx traces from the
// tracer, and the others (sent through conn.PgConn()) from the wire.
const (
	sentUntraced = iota // nothing traced under way: the wire's statements are read there
	sentTraced          // a traced statement began: its message is the next one run
	sentBatch           // a traced batch is under way: its messages were read with it
)

// unknownStatement is what the watch is given for a statement the wire
// does not show the SQL of (a prepared statement pgxha did not see
// prepared, a message cut short): it may commit.
const unknownStatement = "COMMIT"

// wireFrontend wraps build so that a pool connection's frontend writes
// through a wireWriter: what the connection sends through conn.PgConn(),
// past pgx's tracer, is read too while a watch is set (stmtwatch). The
// writer is the connection made after TLS, so it sees the messages as
// sent; pgconn's ExecBatch writes past it, and is read through the
// tracer (pgx's batches) only.
func wireFrontend(build pgconn.BuildFrontendFunc) pgconn.BuildFrontendFunc {
	if build == nil {
		build = pgproto3.NewFrontend
	}
	return func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		if nc, ok := w.(net.Conn); ok {
			if tc := trackedNet(nc); tc != nil {
				w = &wireWriter{Writer: w, tc: tc}
			}
		}
		return build(r, w)
	}
}

// wireWriter reads the statements a connection sends, while its watch is
// set, before they go out.
type wireWriter struct {
	io.Writer
	tc *trackedConn
}

func (w *wireWriter) Write(p []byte) (int, error) {
	if f := w.tc.watch.Load(); f != nil {
		w.tc.readSent(p, *f)
	}
	return w.Writer.Write(p)
}

// readSent gives f the SQL of each statement p runs that the tracer did
// not give it: a simple query's text, or the statement an extended
// query's Bind runs (the unnamed one parsed before it in p, or one
// prepared under a name through pgx). A statement whose SQL p does not
// show is given as unknownStatement. p holds whole messages (pgproto3's
// Frontend writes what it buffered, message by message); a message cut
// short is read as unknownStatement too.
func (tc *trackedConn) readSent(p []byte, f func(sql string)) {
	var unnamed []byte
	haveUnnamed := false
	for len(p) > 0 {
		if len(p) < 5 {
			tc.sentStatement(f, unknownStatement)
			return
		}
		typ := p[0]
		n := int(binary.BigEndian.Uint32(p[1:5]))
		if n < 4 || n-4 > len(p)-5 {
			if typ == 'Q' || typ == 'B' || typ == 'P' {
				tc.sentStatement(f, unknownStatement)
			}
			return
		}
		body := p[5 : 5+n-4]
		p = p[5+n-4:]
		switch typ {
		case 'Q': // Query: the SQL
			sql, _, ok := cstring(body)
			if !ok {
				tc.sentStatement(f, unknownStatement)
				continue
			}
			tc.sentStatement(f, string(sql))
		case 'P': // Parse: a name, the SQL
			name, rest, ok := cstring(body)
			if ok && len(name) == 0 {
				unnamed, _, haveUnnamed = cstring(rest)
			}
		case 'B': // Bind: a portal, a statement name
			_, rest, ok := cstring(body)
			var name []byte
			if ok {
				name, _, ok = cstring(rest)
			}
			switch {
			case !ok:
				tc.sentStatement(f, unknownStatement)
			case len(name) == 0 && haveUnnamed:
				tc.sentStatement(f, string(unnamed))
			case len(name) == 0:
				tc.sentStatement(f, unknownStatement)
			default:
				if sql, ok := tc.preparedSQL(string(name)); ok {
					tc.sentStatement(f, sql)
				} else {
					tc.sentStatement(f, unknownStatement)
				}
			}
		}
	}
}

// sentStatement gives f the SQL of a statement about to be sent, unless
// the tracer gave it already.
func (tc *trackedConn) sentStatement(f func(sql string), sql string) {
	switch tc.sent.Load() {
	case sentTraced:
		tc.sent.Store(sentUntraced) // the traced statement's own message
		return
	case sentBatch:
		return
	}
	f(sql)
}

// cstring splits b at its first NUL.
func cstring(b []byte) (s, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}
