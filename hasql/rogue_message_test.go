package hasql_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// fakePG listens on loopback and plays the start of PostgreSQL's protocol
// on each connection: it refuses TLS and GSS encryption, then hands the
// startup message to answer (which ends the session by returning). t's
// cleanup stops it and waits for its sessions, each of which lasts ten
// seconds at most.
func fakePG(t *testing.T, answer func(c net.Conn, be *pgproto3.Backend, sm *pgproto3.StartupMessage)) net.Listener {
	t.Helper()
	return fakePGFor(t, 10*time.Second, answer)
}

// fakePGFor is fakePG with sessions of up to d.
func fakePGFor(t *testing.T, d time.Duration, answer func(c net.Conn, be *pgproto3.Backend, sm *pgproto3.StartupMessage)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(d))
				be := pgproto3.NewBackend(c, c)
				for range 3 {
					m, err := be.ReceiveStartupMessage()
					if err != nil {
						return
					}
					switch m := m.(type) {
					case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
						if _, err := c.Write([]byte{'N'}); err != nil {
							return
						}
					case *pgproto3.StartupMessage:
						answer(c, be, m)
						return
					default:
						return
					}
				}
			}()
		}
	}()
	return ln
}

// hugeErrorPG answers every startup with an ErrorResponse whose message is
// size bytes long.
func hugeErrorPG(t *testing.T, size int) (addr string, served *atomic.Int64) {
	t.Helper()
	served = new(atomic.Int64)
	raw, err := (&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: strings.Repeat("A", size)}).Encode(nil)
	require.NoError(t, err)
	ln := fakePG(t, func(c net.Conn, _ *pgproto3.Backend, _ *pgproto3.StartupMessage) {
		served.Add(1)
		_, _ = c.Write(raw) // encoded once: nothing allocated per connection
	})
	return ln.Addr().String(), served
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestRogueHugeMessage: a server in the discovered set answers each
// connection with a 100 MiB error message. Check connections, and pool
// connections until connected, refuse a message over 4 MiB: the Manager's
// heap, the node's error and the log stay small.
func TestRogueHugeMessage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr, served := hugeErrorPG(t, 100<<20)
	var logged atomic.Int64
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) { logged.Add(int64(len(p))); return len(p), nil }), nil))
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/app?sslmode=disable&hasql_check_interval=100ms", closedPort(t)))
	require.NoError(t, err)
	cfg.Logger = logger
	cfg.Discoverer = newSetDiscoverer(discovery.Node{Addr: addr})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak.Store(max(peak.Load(), ms.HeapAlloc))
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	waitUntil(t, ctx, "two answers sent", func() bool { return served.Load() >= 2 })
	var lastErr string
	waitUntil(t, ctx, "the node's error", func() bool {
		for _, st := range m.Nodes() {
			if st.Addr == addr && st.LastError != nil {
				lastErr = st.LastError.Error()
				return true
			}
		}
		return false
	})
	m.Close()
	close(stop)
	<-stopped
	t.Logf("heap before %d MiB, peak %d MiB; the node's error: %.200s; %d KiB logged",
		before.HeapAlloc>>20, peak.Load()>>20, lastErr, logged.Load()>>10)
	assert.Less(t, peak.Load()-min(peak.Load(), before.HeapAlloc), uint64(50<<20), "the server's message drove the Manager's heap")
	assert.Less(t, len(lastErr), 1<<20, "the server's message is the node's error")
	assert.Less(t, logged.Load(), int64(1<<20), "the server's message was logged")
}

// TestLargeRowAfterConnect: once connected, a pool connection reads
// messages as large as pgx allows: a row of 8 MiB comes back whole.
func TestLargeRowAfterConnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	m := newManager(t, ctx, c.DSN())
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	var k int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT length(repeat('x', 8 << 20))").Scan(&k))
	var s string
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT repeat('x', 8 << 20)").Scan(&s))
	assert.Len(t, s, 8<<20)
}

// TestConnectErrorHoldsNoPassword: a node's error (NodeStatus.LastError)
// from a failed connect wraps pgx's *pgconn.ConnectError, whose Config a
// tool that walks the chain can read: it holds no password, here a token
// from WithPasswordFunc; its text and the rest of its chain are pgx's.
func TestConnectErrorHoldsNoPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := fmt.Sprintf("postgres://app@127.0.0.1:%d/app?sslmode=disable&hasql_check_interval=50ms", closedPort(t))
	m := newManager(t, ctx, dsn, hasql.WithPasswordFunc(func(context.Context, hasql.NodeConfig) (string, error) { return "iam-token-SECRET", nil }))
	var lastErr error
	waitUntil(t, ctx, "the node's error", func() bool {
		lastErr = m.Nodes()[0].LastError
		return lastErr != nil
	})
	var ce *pgconn.ConnectError
	require.ErrorAs(t, lastErr, &ce, "the node's error: %v", lastErr)
	require.NotNil(t, ce.Config)
	assert.Empty(t, ce.Config.Password, "the password is in the node's error chain")
	assert.Equal(t, "app", ce.Config.User)
	assert.NotContains(t, fmt.Sprintf("%+v", lastErr), "SECRET")
	var ne *net.OpError
	assert.ErrorAs(t, lastErr, &ne, "the network's error is still in the chain")
}

// TestAcquireConnectErrorHoldsNoPassword: a pool connect that fails (the
// role may no longer log in; the check connection, open before, stays)
// comes back from the acquire, and into the node's status, without the
// password in the connect error's Config.
func TestAcquireConnectErrorHoldsNoPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	execOn(t, ctx, c.Master(), "CREATE ROLE shut LOGIN PASSWORD 'shut-SECRET' IN ROLE pg_monitor")
	u, err := url.Parse(c.DSN())
	require.NoError(t, err)
	u.User = url.UserPassword("shut", "shut-SECRET")
	for _, tc := range []struct {
		name string
		opts []hasql.Option
	}{
		{"the fast path", nil},
		{"the general path (a tracer provider)", []hasql.Option{hasql.WithTracerProvider(tracenoop.NewTracerProvider())}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			execOn(t, ctx, c.Master(), "ALTER ROLE shut LOGIN")
			m := newManager(t, ctx, u.String(), tc.opts...)
			require.NoError(t, m.WaitReady(ctx, 1, 1))
			// The role may not log in any more, and its pool connections
			// go: the next acquire connects, and fails.
			execOn(t, ctx, c.Master(), "ALTER ROLE shut NOLOGIN",
				"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'shut' AND application_name <> 'pgxha-check'")
			// Until an acquire connects itself and fails: between two login
			// attempts the node's gate answers with the last failure
			// (*hasql.AuthError, no connect error in it).
			var acqErr error
			var ce *pgconn.ConnectError
			waitUntil(t, ctx, "an acquire whose own connect failed", func() bool {
				conn, err := m.AcquireMaster(ctx)
				if err == nil {
					conn.Exec(ctx, "SELECT 1") // a connection cut above is destroyed on release
					conn.Release()
					return false
				}
				require.NotContains(t, fmt.Sprintf("%+v", err), "SECRET")
				acqErr = err
				return errors.As(err, &ce)
			})
			require.NotNil(t, ce.Config, "the acquire's error: %v", acqErr)
			assert.Empty(t, ce.Config.Password, "the password is in the acquire's error chain")
			assert.Equal(t, "shut", ce.Config.User)
			assert.NotContains(t, fmt.Sprintf("%+v", acqErr), "SECRET")
			for _, n := range m.Nodes() {
				if errors.As(n.LastError, &ce) {
					assert.Empty(t, ce.Config.Password, "%s: the password is in the node's error chain", n.Addr)
				}
				assert.NotContains(t, fmt.Sprintf("%+v", n.LastError), "SECRET", n.Addr)
			}
		})
	}
}
