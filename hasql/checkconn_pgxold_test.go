//go:build pgxold

package hasql_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
)

// TestParseConfigRefusesAuthSettingsOldPgxCannotEnforce: the oldest pgx
// supported knows neither require_auth nor channel_binding and would send
// them as run-time parameters, which PostgreSQL reads only after
// authentication and a rogue server not at all: the password would go to
// a server that asks for it in clear text. ParseConfig refuses them, and
// NewWithConfig refuses them set in code; channel_binding=prefer or
// disable asks for no protection and is not sent.
func TestParseConfigRefusesAuthSettingsOldPgxCannotEnforce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got atomic.Int64
	ln := cleartextRogue(t, &got, func(be *pgproto3.Backend, _ string) {
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"})
		_ = be.Flush()
	})
	dsn := fmt.Sprintf("postgres://app:s3cret-pw@%s/app?sslmode=disable&hasql_check_interval=50ms", ln.Addr())
	for _, q := range []string{"require_auth=scram-sha-256", "require_auth=!password", "channel_binding=require"} {
		_, err := hasql.ParseConfig(dsn + "&" + q)
		require.Error(t, err, q)
		assert.Contains(t, err.Error(), strings.SplitN(q, "=", 2)[0], q)
		assert.Contains(t, err.Error(), "v5.13", q)
		assert.NotContains(t, err.Error(), "s3cret-pw", q)
	}

	cfg, err := hasql.ParseConfig(dsn)
	require.NoError(t, err)
	cfg.Logger = quiet
	cfg.PoolConfig.ConnConfig.RuntimeParams["require_auth"] = "scram-sha-256"
	m, err := hasql.NewWithConfig(ctx, cfg)
	if m != nil {
		m.Close()
	}
	require.Error(t, err)
	assert.Contains(t, err.Error(), "require_auth")

	for _, v := range []string{"prefer", "disable"} {
		cfg, err := hasql.ParseConfig(dsn + "&channel_binding=" + v)
		require.NoError(t, err, v)
		assert.NotContains(t, cfg.PoolConfig.ConnConfig.RuntimeParams, "channel_binding", v)
	}
	assert.Zero(t, got.Load(), "a password reached the server")
}
