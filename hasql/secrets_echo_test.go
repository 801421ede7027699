package hasql_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
)

// TestRogueEchoesPasswordIntoErrors: with settings that let a server
// ask for the password in clear text (sslmode=disable, no require_auth: the
// documented trade-off), a server in the discovered set gets it; it then
// answers with an error whose text is the password, alone and glued to
// other words. The password must still reach no error pgxha keeps or
// returns and no log line, while the server's error (its SQLSTATE) stays
// reachable with errors.As.
func TestRogueEchoesPasswordIntoErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const secret = "s3cr3t-Pa55word"
	var got atomic.Int64
	ln := cleartextRogue(t, &got, func(be *pgproto3.Backend, pw string) {
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01",
			Message: "password authentication failed: you sent " + pw + ", that is sent" + pw + "ok"})
		_ = be.Flush()
	})
	m, logs := echoManager(t, ctx, secret, ln.Addr().String())
	var lastErr error
	waitUntil(t, ctx, "the rogue's error as the node's", func() bool {
		for _, st := range m.Nodes() {
			if st.Addr == ln.Addr().String() && st.LastError != nil && got.Load() > 0 {
				lastErr = st.LastError
				return true
			}
		}
		return false
	})
	shortCtx, c2 := context.WithTimeout(ctx, 300*time.Millisecond)
	_, acqErr := m.AcquireReplica(shortCtx, hasql.FallbackToMaster())
	_, acqErr2 := m.AcquireMaster(shortCtx)
	c2()
	m.Close()
	var pe *pgconn.PgError
	require.ErrorAs(t, lastErr, &pe, "the server's error is still found in the node's: %v", lastErr)
	assert.Equal(t, "28P01", pe.Code)
	t.Logf("node error: %v", lastErr)
	t.Logf("acquire errors: %v | %v", acqErr, acqErr2)
	assert.NotContains(t, fmt.Sprintf("%v %+v", lastErr, lastErr), secret, "the password is in NodeStatus.LastError")
	assert.NotContains(t, fmt.Sprint(acqErr, acqErr2), secret, "the password is in an acquire's error")
	assert.NotContains(t, logs.String(), secret, "the password is in the logs")
}

// TestRogueAuthDowngradeRefused: with require_auth=scram-sha-256, or
// channel_binding=require, a discovered server that asks for the password
// in clear text or as MD5 gets nothing, from pool and check connections.
func TestRogueAuthDowngradeRefused(t *testing.T) {
	for _, tc := range []struct {
		name, params string
		md5          bool
	}{
		{"require_auth cleartext", "sslmode=disable&require_auth=scram-sha-256", false},
		{"require_auth md5", "sslmode=disable&require_auth=scram-sha-256", true},
		{"channel_binding cleartext", "sslmode=prefer&channel_binding=require", false},
		{"channel_binding md5", "sslmode=prefer&channel_binding=require", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var asked, got atomic.Int64
			ln := fakePG(t, func(c net.Conn, be *pgproto3.Backend, _ *pgproto3.StartupMessage) {
				asked.Add(1)
				if tc.md5 {
					be.Send(&pgproto3.AuthenticationMD5Password{Salt: [4]byte{1, 2, 3, 4}})
					_ = be.SetAuthType(pgproto3.AuthTypeMD5Password)
				} else {
					be.Send(&pgproto3.AuthenticationCleartextPassword{})
					_ = be.SetAuthType(pgproto3.AuthTypeCleartextPassword)
				}
				if be.Flush() != nil {
					return
				}
				if m, err := be.Receive(); err == nil {
					if _, ok := m.(*pgproto3.PasswordMessage); ok {
						got.Add(1)
					}
				}
			})
			cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/app?%s&hasql_check_interval=50ms", closedPort(t), tc.params))
			require.NoError(t, err)
			cfg.Logger = slog.New(slog.DiscardHandler)
			cfg.Discoverer = newSetDiscoverer(discovery.Node{Addr: ln.Addr().String()})
			m, err := hasql.NewWithConfig(ctx, cfg)
			require.NoError(t, err)
			defer m.Close()
			waitUntil(t, ctx, "several connects to the rogue", func() bool { return asked.Load() >= 3 })
			short, c2 := context.WithTimeout(ctx, 200*time.Millisecond)
			_, _ = m.AcquireReplica(short, hasql.FallbackToMaster())
			c2()
			m.Close()
			assert.Zero(t, got.Load(), "the rogue received a password message (%d connects)", asked.Load())
		})
	}
}
