package hasql_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
)

// leaks lists where in err's chain s stands: a link's text, a field of a
// *pgconn.PgError, a *pgconn.ConnectError's Config.
func leaks(err error, s string, depth int) []string {
	if err == nil || depth > 32 {
		return nil
	}
	var out []string
	if strings.Contains(err.Error(), s) {
		out = append(out, fmt.Sprintf("text of %T", err))
	}
	switch e := err.(type) {
	case *pgconn.PgError:
		for name, v := range map[string]string{"Message": e.Message, "Detail": e.Detail, "Hint": e.Hint, "Where": e.Where,
			"InternalQuery": e.InternalQuery, "TableName": e.TableName, "ConstraintName": e.ConstraintName, "Routine": e.Routine} {
			if strings.Contains(v, s) {
				out = append(out, "PgError."+name)
			}
		}
	case *pgconn.ConnectError:
		if e.Config != nil && strings.Contains(e.Config.Password, s) {
			out = append(out, "ConnectError.Config")
		}
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		out = append(out, leaks(u.Unwrap(), s, depth+1)...)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			out = append(out, leaks(e, s, depth+1)...)
		}
	}
	return out
}

// cleartextRogue is a fake server that asks for the password in clear
// text and then does what after says with it.
func cleartextRogue(t *testing.T, got *atomic.Int64, after func(be *pgproto3.Backend, pw string)) net.Listener {
	return fakePG(t, func(c net.Conn, be *pgproto3.Backend, _ *pgproto3.StartupMessage) {
		be.Send(&pgproto3.AuthenticationCleartextPassword{})
		if be.Flush() != nil {
			return
		}
		if err := be.SetAuthType(pgproto3.AuthTypeCleartextPassword); err != nil {
			return
		}
		m, err := be.Receive()
		if err != nil {
			return
		}
		pm, ok := m.(*pgproto3.PasswordMessage)
		if !ok {
			return
		}
		got.Add(1)
		after(be, pm.Password)
	})
}

// echoManager makes a Manager whose only node is the fake server at addr,
// reached with password secret and sslmode=disable (so that a server
// asking for it in clear text gets it), checked every 100ms, logging at
// debug level into the buffer it returns. It closes at t's end.
func echoManager(t *testing.T, ctx context.Context, secret, addr string) (*hasql.Manager, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:%s@127.0.0.1:%d/app?sslmode=disable&hasql_check_interval=100ms", url.PathEscape(secret), closedPort(t)))
	require.NoError(t, err)
	require.Equal(t, secret, cfg.PoolConfig.ConnConfig.Password)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Discoverer = newSetDiscoverer(discovery.Node{Addr: addr})
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m, logs
}

// The password said back in the DETAIL and HINT of the server's error
// (which the error's text does not show) is cleared there too.
func TestRogueEchoesPasswordInDetail(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const secret = "s3cr3t-Pa55word"
	var got atomic.Int64
	ln := cleartextRogue(t, &got, func(be *pgproto3.Backend, pw string) {
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01",
			Message: "password authentication failed for user \"app\"",
			Detail:  "Password received: " + pw, Hint: "you sent " + pw})
		_ = be.Flush()
	})
	m, _ := echoManager(t, ctx, secret, ln.Addr().String())
	var lastErr error
	waitUntil(t, ctx, "the rogue's error as the node's", func() bool {
		for _, st := range m.Nodes() {
			if st.Addr == ln.Addr().String() && st.LastError != nil && got.Load() > 0 {
				var pe *pgconn.PgError
				if errors.As(st.LastError, &pe) {
					lastErr = st.LastError
					return true
				}
			}
		}
		return false
	})
	shortCtx, c2 := context.WithTimeout(ctx, 300*time.Millisecond)
	_, acqErr := m.AcquireReplica(shortCtx, hasql.FallbackToMaster())
	c2()
	var pe *pgconn.PgError
	require.ErrorAs(t, lastErr, &pe)
	assert.Equal(t, "28P01", pe.Code)
	assert.Empty(t, leaks(lastErr, secret, 0), "the password in NodeStatus.LastError's chain")
	assert.Empty(t, leaks(acqErr, secret, 0), "the password in the acquire error's chain")
}

// A password that is also the user's name stands in pgx's own text of a
// connect error ("user=postgres"): that is not an echo, and the error
// keeps its types (*pgconn.ConnectError, net.Error) for errors.As.
func TestPasswordEqualToUserKeepsConnectError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://postgres:postgres@127.0.0.1:%d/app?sslmode=disable&hasql_check_interval=100ms", closedPort(t)))
	require.NoError(t, err)
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	var lastErr error
	waitUntil(t, ctx, "the node's connect error", func() bool {
		for _, st := range m.Nodes() {
			if st.LastError != nil {
				lastErr = st.LastError
				return true
			}
		}
		return false
	})
	var ce *pgconn.ConnectError
	var ne net.Error
	assert.True(t, errors.As(lastErr, &ce), "errors.As finds the *pgconn.ConnectError: %v", lastErr)
	assert.True(t, errors.As(lastErr, &ne), "errors.As finds the net.Error of a refused connect: %v", lastErr)
	assert.Equal(t, failover.NodeDown, failover.Classify(lastErr))
	assert.Empty(t, leaks(lastErr, "password", 0))
}

// A server that accepted the password and says it back in its answer to a
// check's statement gets it into no NodeStatus and no log line.
func TestRogueEchoesPasswordIntoCheckError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const secret = "s3cr3t-Pa55word"
	var got, echoed atomic.Int64
	ln := cleartextRogue(t, &got, func(be *pgproto3.Backend, pw string) {
		if welcome(be) != nil {
			return
		}
		failed := false
		for {
			m, err := be.Receive()
			if err != nil {
				return
			}
			switch m.(type) {
			case *pgproto3.Parse, *pgproto3.Bind, *pgproto3.Execute, *pgproto3.Describe:
				failed = true
			case *pgproto3.Sync, *pgproto3.Query:
				_, q := m.(*pgproto3.Query)
				if failed || q {
					echoed.Add(1)
					be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42501",
						Message: "permission denied: your password is " + pw})
					failed = false
				}
				be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				if be.Flush() != nil {
					return
				}
			case *pgproto3.Terminate:
				return
			}
		}
	})
	m, logs := echoManager(t, ctx, secret, ln.Addr().String())
	var lastErr error
	waitUntil(t, ctx, "the rogue's check error as the node's", func() bool {
		for _, st := range m.Nodes() {
			if st.Addr == ln.Addr().String() && st.LastError != nil && echoed.Load() > 0 &&
				strings.Contains(st.LastError.Error(), "permission denied") {
				lastErr = st.LastError
				return true
			}
		}
		return false
	})
	m.Close()
	assert.Empty(t, leaks(lastErr, secret, 0), "the password in NodeStatus.LastError: %v", lastErr)
	assert.NotContains(t, logs.String(), secret, "the password in the logs")
}
