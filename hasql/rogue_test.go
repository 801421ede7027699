package hasql_test

import (
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// roguePG is a rogue PostgreSQL server: it speaks the start of the
// protocol, accepts TLS when it has a certificate, asks every client for
// its password in clear text (AuthenticationCleartextPassword), records
// what it gets and ends the connection with an authentication error.
type roguePG struct {
	ln  net.Listener
	tls *tls.Config // nil: it answers SSLRequest with 'N'

	mu         sync.Mutex
	passwords  []string
	handshakes int // TLS handshakes tried, failed ones included
	startups   int // startup messages read (after TLS, if any)
	changed    chan struct{}
	wg         sync.WaitGroup
}

// newRoguePG starts a rogue server on network ("tcp" or "unix") and
// address; t's cleanup stops it.
func newRoguePG(t *testing.T, network, address string, cfg *tls.Config) *roguePG {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatalf("rogue server: %v", err)
	}
	r := &roguePG{ln: ln, tls: cfg, changed: make(chan struct{})}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(func() { ln.Close(); r.wg.Wait() })
	return r
}

// Addr is the server's "host:port" (TCP) or socket path.
func (r *roguePG) Addr() string { return r.ln.Addr().String() }

// Port is the TCP port.
func (r *roguePG) Port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *roguePG) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer c.Close()
			r.session(c)
		}()
	}
}

// note records a change under mu and wakes waiters.
func (r *roguePG) note(f func()) {
	r.mu.Lock()
	f()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *roguePG) session(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var conn net.Conn = c
	be := pgproto3.NewBackend(conn, conn)
	for range 3 {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return
		}
		switch msg := msg.(type) {
		case *pgproto3.SSLRequest:
			if r.tls == nil {
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return
				}
				continue
			}
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return
			}
			tc := tls.Server(conn, r.tls)
			err := tc.Handshake()
			r.note(func() { r.handshakes++ })
			if err != nil {
				return
			}
			conn = tc
			be = pgproto3.NewBackend(conn, conn)
		case *pgproto3.GSSEncRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return
			}
		case *pgproto3.StartupMessage:
			r.note(func() { r.startups++ })
			r.askPassword(be, msg)
			return
		default:
			return
		}
	}
}

func (r *roguePG) askPassword(be *pgproto3.Backend, _ *pgproto3.StartupMessage) {
	be.Send(&pgproto3.AuthenticationCleartextPassword{})
	if err := be.Flush(); err != nil {
		return
	}
	if err := be.SetAuthType(pgproto3.AuthTypeCleartextPassword); err != nil {
		return
	}
	msg, err := be.Receive()
	if err != nil {
		return
	}
	if pw, ok := msg.(*pgproto3.PasswordMessage); ok {
		r.note(func() { r.passwords = append(r.passwords, pw.Password) })
	}
	be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"})
	_ = be.Flush()
}

// Passwords returns the passwords the server was sent.
func (r *roguePG) Passwords() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.passwords...)
}

// waitFor waits until cond, called with the server's counts under its
// lock, holds, or fails t after timeout.
func (r *roguePG) waitFor(t *testing.T, timeout time.Duration, what string, cond func(handshakes, startups, passwords int) bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok := cond(r.handshakes, r.startups, len(r.passwords))
		ch := r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("rogue server: %s did not happen within %s", what, timeout)
		}
	}
}
