package faultproxy_test

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgxha/pgxha/testcluster/internal/faultproxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	// silence is how long a read must stay empty to count as "nothing arrived".
	silence = 200 * time.Millisecond
	// patience bounds every wait for something that must happen.
	patience = 5 * time.Second
)

// server is an upstream TCP server on 127.0.0.1 run by a handler per
// connection. The handler's connection is closed when the handler returns.
type server struct {
	ln       net.Listener
	handler  func(s *server, c net.Conn)
	accepted atomic.Int64
	received atomic.Int64
	conns    chan net.Conn // every accepted connection, for tests that act on the server side

	mu      sync.Mutex
	open    map[net.Conn]struct{}
	stopped bool

	quit       chan struct{} // closed by Close
	acceptDone chan struct{}
	handlers   sync.WaitGroup
	closeOnce  sync.Once
}

func startServer(t *testing.T, handler func(s *server, c net.Conn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &server{
		ln:         ln,
		handler:    handler,
		conns:      make(chan net.Conn, 1024),
		open:       make(map[net.Conn]struct{}),
		quit:       make(chan struct{}),
		acceptDone: make(chan struct{}),
	}
	go s.acceptLoop()
	t.Cleanup(s.Close)
	return s
}

func (s *server) acceptLoop() {
	defer close(s.acceptDone)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			_ = c.Close()
			continue
		}
		s.open[c] = struct{}{}
		s.handlers.Add(1)
		s.mu.Unlock()
		s.accepted.Add(1)
		select {
		case s.conns <- c:
		default:
		}
		go func() {
			defer s.handlers.Done()
			defer func() {
				_ = c.Close()
				s.mu.Lock()
				delete(s.open, c)
				s.mu.Unlock()
			}()
			s.handler(s, c)
		}()
	}
}

func (s *server) Addr() string { return s.ln.Addr().String() }

// StopListening closes the listener; connections stay open.
func (s *server) StopListening() {
	_ = s.ln.Close()
	<-s.acceptDone
}

// Close closes the listener and every connection and waits for the handlers.
func (s *server) Close() {
	s.closeOnce.Do(func() {
		s.StopListening()
		close(s.quit)
		s.mu.Lock()
		s.stopped = true
		for c := range s.open {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.handlers.Wait()
	})
}

// echo writes back everything it reads until EOF or an error.
func echo(s *server, c net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			s.received.Add(int64(n))
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// bannerEcho writes banner on its own, then echoes.
func bannerEcho(banner string) func(s *server, c net.Conn) {
	return func(s *server, c net.Conn) {
		if _, err := io.WriteString(c, banner); err != nil {
			return
		}
		echo(s, c)
	}
}

// park leaves the connection to the test (through server.conns) until the
// server is closed.
func park(s *server, _ net.Conn) {
	<-s.quit
}

func newProxy(t *testing.T, upstream string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New("127.0.0.1:0", upstream)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, patience)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func write(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	require.NoError(t, c.SetWriteDeadline(time.Now().Add(patience)))
	_, err := io.WriteString(c, msg)
	require.NoError(t, err)
}

// readExactly reads len(want) bytes and requires them to equal want.
func readExactly(t *testing.T, c net.Conn, want string) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(patience)))
	got := make([]byte, len(want))
	_, err := io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, want, string(got))
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	write(t, c, msg)
	readExactly(t, c, msg)
}

// requireSilence requires that nothing, not even EOF or an error other than
// the deadline, arrives on c for the silence period.
func requireSilence(t *testing.T, c net.Conn) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(silence)))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	require.Zero(t, n, "bytes arrived: %q", buf[:n])
	require.Truef(t, isTimeout(err), "want a read timeout, got %v", err)
}

// readEnd reads until c ends and returns the error that ended it (io.EOF for
// a clean end). It fails if c does not end within patience.
func readEnd(t *testing.T, c net.Conn) error {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(patience)))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err != nil {
			require.Falsef(t, isTimeout(err), "connection did not end: %v", err)
			return err
		}
	}
}

func requireReset(t *testing.T, c net.Conn) {
	t.Helper()
	err := readEnd(t, c)
	require.Truef(t, errors.Is(err, syscall.ECONNRESET), "want ECONNRESET, got %v", err)
}

func requireEOF(t *testing.T, c net.Conn) {
	t.Helper()
	err := readEnd(t, c)
	require.ErrorIs(t, err, io.EOF)
}

func requireRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, patience)
	if err == nil {
		_ = c.Close()
	}
	require.Truef(t, errors.Is(err, syscall.ECONNREFUSED), "want ECONNREFUSED, got %v", err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// nextConn returns the next connection the server accepted.
func nextConn(t *testing.T, s *server) net.Conn {
	t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(patience):
		t.Fatal("the server accepted no connection")
		return nil
	}
}

func resetClose(t *testing.T, c net.Conn) {
	t.Helper()
	require.NoError(t, c.(*net.TCPConn).SetLinger(0))
	require.NoError(t, c.Close())
}
