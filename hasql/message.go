package hasql

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strconv"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// maxStartupMessage bounds a message read by a check connection, and by
// any connection before the server has authenticated: a check's answers
// are small (a walsender list of thousands of replicas fits), and a
// server in the set, vouched for or not, must not make the Manager read a
// message of a gigabyte (pgx's own bound) into memory, into a node's error
// and into its logs.
const maxStartupMessage = 4 << 20

// pgxMaxMessage is pgproto3's own bound on a message, restored on a pool
// connection once it is connected.
const pgxMaxMessage = 0x3fffffff - 1

// maxPreAuthMessage bounds a message read while the connection is made,
// until it is ready (an error, an authentication request, a parameter, a
// notice): a server's refusal of megabytes fails the connect with pgx's
// short "invalid body length" instead, and what pgx makes of a refusal (a
// text it keeps, beyond the fields of the server's error that
// boundServerText cuts) stays this small. Authentication tokens (GSSAPI
// with a large ticket) fit; a notice of more at login (one quoting a
// setting of hundreds of KiB) fails the connect.
const maxPreAuthMessage = 256 << 10

// maxListenMessage bounds a message read by a Listener's connection once
// it is made: a notification's payload is under 8000 bytes (PostgreSQL
// refuses more) and its channel a name, and the Listener keeps up to 256
// notifications for its caller.
const maxListenMessage = 64 << 10

// maxBeforeReady bounds what a connection reads before the server is
// ready for its first query (authentication, parameters, notices): a real
// server sends a few KiB. pgconn keeps every parameter reported, for as
// long as the connect runs.
const maxBeforeReady = 1 << 20

// maxParameters and maxParameterBytes bound the parameters a server
// reports (ParameterStatus), which pgconn keeps, one value per name, for
// the connection's life: a real server reports about 15, of a few bytes
// each, and reports one again when its value changes.
const (
	maxParameters     = 256
	maxParameterBytes = 1 << 20
)

// maxScramIterations bounds the iteration count a server may ask of
// SCRAM: the client computes them (PBKDF2) at each connect, and nothing
// interrupts that, not the connect's timeout, not Close. PostgreSQL asks
// 4096 by default (scram_iterations); pgx allows up to 10 million, seconds
// of a core.
const maxScramIterations = 100_000

// boundedFrontend wraps build (nil: pgx's) so that the frontends it makes
// read messages of at most maxPreAuthMessage, and read the server through
// a serverReader; a connection raises its bound once ready
// (maxStartupMessage for a check connection, maxListenMessage for a
// Listener's, pgxMaxMessage for a pool's, after its ValidateConnect).
func boundedFrontend(build pgconn.BuildFrontendFunc) pgconn.BuildFrontendFunc {
	if build == nil {
		build = pgproto3.NewFrontend
	}
	return func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		sr := &serverReader{r: r}
		if tc := trackedWriter(w); tc != nil {
			tc.reader = sr // see nodeTracer.TraceConnectEnd
		}
		f := build(sr, w)
		f.SetMaxBodyLen(maxPreAuthMessage)
		return f
	}
}

// trackedWriter returns the tracked network connection a frontend writes
// to (see wireFrontend), nil when there is none.
func trackedWriter(w io.Writer) *trackedConn {
	switch w := w.(type) {
	case *wireWriter:
		return w.tc
	case net.Conn:
		return trackedNet(w)
	}
	return nil
}

// serverReader is what a connection's frontend reads the server through.
// It reads the header of every message as it passes (a few instructions a
// message, nothing kept), and the body of the few that would make the
// connection keep or compute what the server chooses: a ParameterStatus,
// an authentication request before the server is ready. Past a bound
// (maxBeforeReady, maxParameters, maxParameterBytes, maxScramIterations)
// its reads fail, with an error that names the bound: pgconn ends the
// connection on a failed read, as on a lost one. A check connection's and
// a Listener's are read so for their life; a pool connection's until it
// is connected (see stop), so that its queries pay nothing.
type serverReader struct {
	r      io.Reader
	err    error   // the bound passed: every read from then on fails
	off    bool    // nothing more is read: a header pgx refuses, or stop
	ready  bool    // a ReadyForQuery came
	before int     // bytes of the messages before it
	hdr    [5]byte // a header split across reads
	nhdr   int     // bytes of hdr read
	typ    byte    // the type of the message whose body is read
	left   int     // bytes of its body still to come
	keep   bool    // its body is kept in body, and read once whole
	body   []byte
	params map[string]int // the parameters reported: the size of each
	psize  int            // their sizes' sum
}

func (s *serverReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	k, err := s.r.Read(p)
	if k > 0 && !s.off {
		if s.err = s.scan(p[:k]); s.err != nil {
			return 0, s.err
		}
	}
	return k, err
}

// stop ends the reading of headers: the connection is connected, and
// pgx's bounds are the user's.
func (s *serverReader) stop() {
	s.off, s.params, s.body = true, nil, nil
}

// scan reads the messages b continues.
func (s *serverReader) scan(b []byte) error {
	for len(b) > 0 {
		if s.left > 0 {
			k := min(s.left, len(b))
			if s.keep {
				s.body = append(s.body, b[:k]...)
			}
			s.left -= k
			b = b[k:]
			if s.left == 0 && s.keep {
				if err := s.message(); err != nil {
					return err
				}
			}
			continue
		}
		var h []byte
		if s.nhdr == 0 && len(b) >= len(s.hdr) {
			h, b = b[:len(s.hdr)], b[len(s.hdr):]
		} else {
			k := copy(s.hdr[s.nhdr:], b)
			s.nhdr += k
			b = b[k:]
			if s.nhdr < len(s.hdr) {
				return nil
			}
			s.nhdr = 0
			h = s.hdr[:]
		}
		typ, size := h[0], int(int32(binary.BigEndian.Uint32(h[1:])))-4
		if s.ready && typ != 'S' && size >= 0 {
			s.left, s.keep = size, false // the common case, in line
			continue
		}
		if err := s.header(typ, size); err != nil || s.off {
			return err
		}
	}
	return nil
}

// header begins a message of type typ whose body is size bytes.
func (s *serverReader) header(typ byte, size int) error {
	if size < 0 || !s.ready && size > maxPreAuthMessage {
		s.off = true // pgx refuses it, and the connection, with its own error
		return nil
	}
	if !s.ready {
		s.before += 5 + size
		if s.before > maxBeforeReady {
			return fmt.Errorf("hasql: the server sent more than %d KiB before it was ready for a query", maxBeforeReady>>10)
		}
		s.ready = typ == 'Z'
	}
	s.typ, s.left = typ, size
	switch typ {
	case 'S': // ParameterStatus
		if size > maxParameterBytes {
			return fmt.Errorf("hasql: the server reported a parameter of %d bytes, more than the %d KiB of parameters a connection keeps", size, maxParameterBytes>>10)
		}
		s.keep = true
	case 'R': // an authentication request
		s.keep = !s.ready
	default:
		s.keep = false
	}
	if !s.keep {
		return nil
	}
	s.body = s.body[:0]
	if size == 0 {
		return s.message()
	}
	return nil
}

// message reads the body of a message kept whole.
func (s *serverReader) message() error {
	var err error
	switch s.typ {
	case 'S':
		err = s.parameter(s.body)
	case 'R':
		err = scramIterations(s.body)
	}
	if cap(s.body) > 1<<10 {
		s.body = nil // a large one is not kept for the next
	}
	return err
}

// parameter counts a ParameterStatus whose body is body: a name, a value.
func (s *serverReader) parameter(body []byte) error {
	name, _, ok := cstring(body)
	if !ok {
		return nil // pgx refuses it
	}
	old, known := s.params[string(name)]
	if !known && len(s.params) >= maxParameters {
		return fmt.Errorf("hasql: the server reported more than %d parameters", maxParameters)
	}
	s.psize += len(body) - old
	if s.psize > maxParameterBytes {
		return fmt.Errorf("hasql: the server's parameters came to more than the %d KiB a connection keeps", maxParameterBytes>>10)
	}
	if s.params == nil {
		s.params = make(map[string]int)
	}
	s.params[string(name)] = len(body)
	return nil
}

// scramIterations refuses an authentication request that continues SCRAM
// (AuthenticationSASLContinue, the server-first-message: "r=nonce,s=salt,
// i=iterations") with an iteration count over maxScramIterations.
func scramIterations(body []byte) error {
	if len(body) < 4 || binary.BigEndian.Uint32(body) != pgproto3.AuthTypeSASLContinue {
		return nil
	}
	data := body[4:]
	if !bytes.HasPrefix(data, []byte("r=")) {
		return nil // another mechanism's
	}
	for attr := range bytes.SplitSeq(data, []byte(",")) {
		v, ok := bytes.CutPrefix(attr, []byte("i="))
		if !ok {
			continue
		}
		if i, err := strconv.Atoi(string(v)); err == nil && i > maxScramIterations {
			return fmt.Errorf("hasql: the server asks SCRAM for %d iterations, more than the %d pgxha computes", i, maxScramIterations)
		}
		return nil // pgx refuses a count that is not a number
	}
	return nil
}

// isPgxFrontend reports whether build is pgx's own (or none): one the user
// set bounds messages as the user chose, and is left as it is. pgx's own
// is pgproto3.NewFrontend, or, before v5.9, a function of pgconn's that
// calls it (the one ParseConfig sets).
func isPgxFrontend(build pgconn.BuildFrontendFunc) bool {
	if build == nil {
		return true
	}
	p := reflect.ValueOf(build).Pointer()
	return p == reflect.ValueOf(pgconn.BuildFrontendFunc(pgproto3.NewFrontend)).Pointer() || p == pgconnFrontend()
}

// pgconnFrontend is the code pointer of the BuildFrontend pgconn's
// ParseConfig sets (0 when it cannot tell), read once.
var pgconnFrontend = sync.OnceValue(func() uintptr {
	cfg, err := pgconn.ParseConfig("host=localhost sslmode=disable passfile=" + os.DevNull)
	if err != nil || cfg.BuildFrontend == nil {
		return 0
	}
	return reflect.ValueOf(cfg.BuildFrontend).Pointer()
})
