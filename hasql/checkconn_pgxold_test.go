//go:build pgxold

package hasql_test

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
)

// TestCheckConnectionKeepsRequireAuth: with the oldest pgx supported,
// require_auth and channel_binding travel as run-time parameters, which
// PostgreSQL refuses. The check connection, which sets run-time
// parameters of its own, keeps them: a server that asks for the password
// in clear gets it from no connection.
func TestCheckConnectionKeepsRequireAuth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := newHonestPG(t)
	cfg, err := hasql.ParseConfig("postgres://app:s3cret@" + h.ln.Addr().String() + "/app?sslmode=disable&require_auth=scram-sha-256&hasql_check_interval=50ms")
	require.NoError(t, err)
	require.Contains(t, cfg.PoolConfig.ConnConfig.RuntimeParams, "require_auth", "this pgx knows require_auth")
	cfg.Logger = quiet
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	waitUntil(t, ctx, "the check connection's startup", func() bool {
		pw, ref := h.counts()
		return slices.Contains(ref, "pgxha-check") || slices.Contains(pw, "pgxha-check")
	})
	pw, ref := h.counts()
	t.Logf("startups refused for require_auth (by application_name): %q; clear-text passwords sent by: %q", ref, pw)
	assert.Empty(t, pw, "a connection with require_auth=scram-sha-256 sent the password in clear")
}

// honestPG plays a PostgreSQL server whose pg_hba.conf asks for the
// password in clear ("password" method) and which, like PostgreSQL,
// refuses a startup that sets a parameter it does not know (require_auth,
// channel_binding sent by a pgx that does not know them). It records the
// passwords it got and the startups it refused.
type honestPG struct {
	ln                  net.Listener
	mu                  sync.Mutex
	passwords, refusals []string // the startup's application_name, per event
}

func newHonestPG(t *testing.T) *honestPG {
	t.Helper()
	h := &honestPG{}
	h.ln = fakePG(t, func(_ net.Conn, be *pgproto3.Backend, sm *pgproto3.StartupMessage) {
		app := sm.Parameters["application_name"]
		for _, k := range []string{"require_auth", "channel_binding"} {
			if _, ok := sm.Parameters[k]; ok {
				h.mu.Lock()
				h.refusals = append(h.refusals, app)
				h.mu.Unlock()
				be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "42704", Message: "unrecognized configuration parameter \"" + k + "\""})
				_ = be.Flush()
				return
			}
		}
		be.Send(&pgproto3.AuthenticationCleartextPassword{})
		if be.Flush() != nil || be.SetAuthType(pgproto3.AuthTypeCleartextPassword) != nil {
			return
		}
		if pm, err := be.Receive(); err == nil {
			if _, ok := pm.(*pgproto3.PasswordMessage); ok {
				h.mu.Lock()
				h.passwords = append(h.passwords, app)
				h.mu.Unlock()
			}
		}
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"})
		_ = be.Flush()
	})
	return h
}

func (h *honestPG) counts() (passwords, refusals []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.passwords), slices.Clone(h.refusals)
}
