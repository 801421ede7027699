package hasql_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
)

// listenEchoRogue is the connection string's one host, taken over: it asks
// every connection for the password in clear text (which sslmode=disable,
// prefer or require allow), answers the checks as a master (simple
// protocol, as through a pooler) and the pool's start-time query, and ends
// the first connection that sends LISTEN, once it has listened, with a
// FATAL error whose message is the password it received.
func listenEchoRogue(t *testing.T) (addr string, ended *atomic.Int64) {
	t.Helper()
	ended = new(atomic.Int64)
	return listenRogue(t, func(be *pgproto3.Backend, pw string) bool {
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "57P01",
			Message: "terminating connection due to administrator command: " + pw, Detail: "your password is " + pw})
		_ = be.Flush()
		ended.Add(1)
		return true
	}), ended
}

// listenRogue is the connection string's one host, taken over: it asks
// every connection for the password in clear text (which sslmode=disable,
// prefer or require allow), answers the checks as a master (simple
// protocol, as through a pooler) and the pool's start-time query, and
// gives the first connection that sends LISTEN, once it has listened, to
// onListen (true: end the session).
func listenRogue(t *testing.T, onListen func(be *pgproto3.Backend, pw string) (end bool)) string {
	t.Helper()
	var listens atomic.Int64
	ln := fakePG(t, func(c net.Conn, be *pgproto3.Backend, sm *pgproto3.StartupMessage) {
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		be.Send(&pgproto3.AuthenticationCleartextPassword{})
		if be.Flush() != nil || be.SetAuthType(pgproto3.AuthTypeCleartextPassword) != nil {
			return
		}
		msg, err := be.Receive()
		if err != nil {
			return
		}
		pw, ok := msg.(*pgproto3.PasswordMessage)
		if !ok || welcome(be) != nil {
			return
		}
		check := sm.Parameters["application_name"] == "pgxha-check"
		var sql string
		failed := false
		for {
			m, err := be.Receive()
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *pgproto3.Parse:
				if check {
					failed = true
					continue
				}
				sql = m.Query
				be.Send(&pgproto3.ParseComplete{})
			case *pgproto3.Bind:
				if !failed {
					be.Send(&pgproto3.BindComplete{})
				}
			case *pgproto3.Describe:
				if failed {
					continue
				}
				if m.ObjectType == 'S' {
					be.Send(&pgproto3.ParameterDescription{})
				}
				be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("c"), DataTypeOID: oidInt8, DataTypeSize: 8, TypeModifier: -1}}})
			case *pgproto3.Execute:
				if failed {
					continue
				}
				v := "1"
				if strings.Contains(sql, "pg_postmaster_start_time") {
					v = "1767225600000000" // rogueStart
				}
				be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte(v)}})
				be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
			case *pgproto3.Sync:
				if failed {
					be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "26000", Message: "prepared statement does not exist"})
					failed = false
				}
				be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			case *pgproto3.Query:
				switch q := m.String; {
				case strings.HasPrefix(q, "LISTEN"):
					be.Send(&pgproto3.CommandComplete{CommandTag: []byte("LISTEN")})
					be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
					if listens.Add(1) == 1 {
						if be.Flush() != nil {
							return
						}
						if onListen(be, pw.Password) {
							return
						}
					}
				case strings.Contains(q, "pg_control_system()), pg_postmaster_start_time()"):
					sendServer(be, 7000000000000000005, "rogue")
					be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				case strings.Contains(q, "string_agg"), strings.Contains(q, "synchronous_standby_names"):
					sendMasterCheck(be)
					be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				default:
					sendRow(be, []uint32{oidInt4}, []any{1})
					be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				}
			case *pgproto3.Terminate:
				return
			}
			if be.Flush() != nil {
				return
			}
		}
	})
	return ln.Addr().String()
}

// TestListenerMissedErrorHoldsNoPasswordTheServerEchoed: docs/security.md says a
// server that got the password and writes it back (in its error's message,
// detail or hint) does not get it into pgxha's errors; "the errors of your
// own statements" alone are left as the server made them. A Listener's
// connection is pgxha's, its statements (LISTEN, the wait) too: when the
// server ends it, the Listener moves on and hands the caller a
// *MissedError whose Err is the server's error, the password cleared (it
// was there, as the server made it).
func TestListenerMissedErrorHoldsNoPasswordTheServerEchoed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const password = "Zq9xW-s3cr3t-pw"
	addr, _ := listenEchoRogue(t)
	cfg, err := hasql.ParseConfig("postgres://app:" + password + "@" + addr + "/app?sslmode=disable")
	require.NoError(t, err)
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 0), "setup: the rogue is the master")
	l, err := m.Listen(ctx, "jobs")
	require.NoError(t, err)
	defer l.Close()
	_, err = l.Receive(ctx)
	require.Error(t, err)
	t.Logf("Receive: %v", err)
	require.True(t, errors.Is(err, hasql.ErrMissed), "want a MissedError, got %v", err)
	assert.NotContains(t, err.Error(), password, "the Listener's MissedError text holds the password the server echoed")
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		assert.NotContains(t, pe.Message+pe.Detail, password, "the *pgconn.PgError under the Listener's MissedError holds the password the server echoed")
	}
}

// TestListenerNotificationSizeIsBounded: a Listener keeps up to 256
// notifications for the caller (its events channel). PostgreSQL refuses
// a NOTIFY payload of 8000 bytes or more; a server that is master (the
// connection string's one host, taken over) sends 64 notifications of
// 4 MiB before the caller asks for one. Read with a bound of 4 MiB, the
// Manager would hold 256 MiB of them, and 1 GiB with 256.
func TestListenerNotificationSizeIsBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	payload := strings.Repeat("n", 4<<20-1024)
	var sent atomic.Int64
	addr := listenRogue(t, func(be *pgproto3.Backend, _ string) bool {
		defer sent.Store(1) // all sent, or the Listener left
		for range 64 {
			be.Send(&pgproto3.NotificationResponse{PID: 1, Channel: "jobs", Payload: payload})
			if be.Flush() != nil {
				return true
			}
		}
		return false
	})
	cfg, err := hasql.ParseConfig("postgres://app:pw@" + addr + "/app?sslmode=disable")
	require.NoError(t, err)
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 0), "setup: the rogue is the master")
	before := retainedHeap()
	l, err := m.Listen(ctx, "jobs")
	require.NoError(t, err)
	defer l.Close()
	waitUntil(t, ctx, "the rogue sent its notifications, or the Listener left", func() bool { return sent.Load() == 1 })
	// The last flush returned: the Listener has read all but what the
	// sockets' buffers hold, or it left.
	after := retainedHeap()
	t.Logf("heap held before Listen %d MiB, with 64 notifications of 4 MiB sent %d MiB", before>>20, after>>20)
	assert.Less(t, after-min(after, before), uint64(64<<20), "a Listener holds %d MiB of notifications no PostgreSQL server can send", (after-min(after, before))>>20)
}
