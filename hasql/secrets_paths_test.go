package hasql_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestDBAndListenConnectErrorsHoldNoPassword: a connect made for
// DB() or Listen that the server refuses (here: the role's CONNECTION
// LIMIT reached; the check and pool connections, open before, stay) comes
// back to the caller with pgx's *pgconn.ConnectError in its chain, whose
// Config must hold no password (as for the node's error and an acquire's,
// TestConnectErrorHoldsNoPassword, TestAcquireConnectErrorHoldsNoPassword).
func TestDBAndListenConnectErrorsHoldNoPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	execOn(t, ctx, c.Master(), "CREATE ROLE lim LOGIN PASSWORD 'lim-SECRET' IN ROLE pg_monitor")
	u, err := url.Parse(c.DSN())
	require.NoError(t, err)
	u.User = url.UserPassword("lim", "lim-SECRET")
	m := newManager(t, ctx, u.String())
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	// Warm the pool so that it has no reason to connect again.
	conn, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	conn.Release()
	execOn(t, ctx, c.Master(), "ALTER ROLE lim CONNECTION LIMIT 0")

	check := func(t *testing.T, what string, err error) {
		require.Error(t, err, what)
		var ce *pgconn.ConnectError
		require.ErrorAs(t, err, &ce, "%s: %v", what, err)
		require.NotNil(t, ce.Config)
		assert.Empty(t, ce.Config.Password, "%s: the password is in the returned error's chain (%T, errors.As *pgconn.ConnectError .Config.Password=%q)", what, err, ce.Config.Password)
		assert.NotContains(t, fmt.Sprintf("%+v", err), "SECRET", what)
	}

	t.Run("DB", func(t *testing.T) {
		db := m.DB(hasql.TargetMaster)
		defer db.Close()
		_, err := db.Conn(ctx)
		check(t, "DB(TargetMaster).Conn", err)
	})
	t.Run("DBAuto", func(t *testing.T) {
		db := m.DB(hasql.TargetAuto)
		defer db.Close()
		_, err := db.ExecContext(ctx, "SELECT 1")
		check(t, "DB(TargetAuto).Exec", err)
	})
	t.Run("Listen", func(t *testing.T) {
		l, err := m.Listen(ctx, "ch")
		if err == nil {
			l.Close()
		}
		check(t, "Listen", err)
	})
}
