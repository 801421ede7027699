//go:build linux

package hasql_test

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// The Listener's session is ended on the master (pg_terminate_backend)
// eight seconds after it began, with the master staying master and the Listener's
// markers coming back every second: the MissedError's window begins at the
// last marker, about a second before, not when the connection began. The
// same through PgBouncer in session mode, whose clients get a backend PID
// of PgBouncer's own, not the server's.
func TestListenWindowBeginsAtTheLastMarker(t *testing.T) {
	for _, mode := range []testcluster.PgBouncerMode{testcluster.PgBouncerNone, testcluster.PgBouncerSession} {
		t.Run("pgbouncer="+string(mode), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			c := testcluster.New(t, testcluster.Options{Replicas: 1, PgBouncer: mode})
			n1 := c.Nodes()[0]
			m := newManager(t, ctx, c.DSN())
			require.NoError(t, m.WaitReady(ctx, 1, 1))
			l, err := m.Listen(ctx, "ev")
			require.NoError(t, err)
			defer l.Close()
			began := time.Now()
			select {
			case <-time.After(8 * time.Second):
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
			var ended int
			admin, err := n1.Conn(ctx)
			require.NoError(t, err)
			defer admin.Close(context.Background())
			kill := time.Now()
			require.NoError(t, admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE pid <> pg_backend_pid() AND (query LIKE 'LISTEN%' OR query LIKE '%pgxha.listener.%')`).Scan(&ended))
			require.Equal(t, 1, ended)
			rctx, rcancel := context.WithTimeout(ctx, time.Minute)
			defer rcancel()
			_, err = l.Receive(rctx)
			var missed *hasql.MissedError
			require.True(t, errors.As(err, &missed), "want a MissedError, got %v", err)
			t.Logf("began %s, killed %s: %v", began.Format(time.RFC3339Nano), kill.Format(time.RFC3339Nano), missed)
			require.True(t, missed.Lost.After(kill.Add(-4*time.Second)),
				"the window begins %s before the session ended (the connection began %s before): markers never came back",
				kill.Sub(missed.Lost), kill.Sub(began))
		})
	}
}

// A Listener whose connection string makes sessions read-only
// (default_transaction_read_only, as a role's setting could): the checks have
// their own session, the master is master. The Listener's markers must not
// end its connection.
func TestListenMarkerInAReadOnlySession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := newManager(t, ctx, withParams(c.DSN(), "options", "-cdefault_transaction_read_only=on"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	requireListenerKeepsItsConnection(t, ctx, m, "a read-only session ended the Listener's connection")
}

// A role that may LISTEN but not call pg_notify() (a hardened server
// revokes EXECUTE on it from PUBLIC; the NOTIFY statement needs no
// privilege): the Listener's markers fail with an ERROR on a healthy
// connection to the master, which must not be taken for a lost one.
func TestListenWithoutPgNotifyPrivilegeKeepsItsConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	execOn(t, ctx, c.Nodes()[0],
		"CREATE ROLE app LOGIN PASSWORD 'app-secret'",
		"REVOKE EXECUTE ON FUNCTION pg_notify(text, text) FROM PUBLIC")
	u, err := url.Parse(c.DSN())
	require.NoError(t, err)
	u.User = url.UserPassword("app", "app-secret")
	m := newManager(t, ctx, u.String())
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	requireListenerKeepsItsConnection(t, ctx, m, "the Listener's marker ended its healthy connection")
}

// requireListenerKeepsItsConnection listens on m's master and checks that
// Receive returns nothing, no MissedError either, for 6 s: several marker
// periods on a channel nobody notifies.
func requireListenerKeepsItsConnection(t *testing.T, ctx context.Context, m *hasql.Manager, msg string) {
	t.Helper()
	l, err := m.Listen(ctx, "ev")
	require.NoError(t, err)
	defer l.Close()
	rctx, rcancel := context.WithTimeout(ctx, 6*time.Second)
	defer rcancel()
	_, err = l.Receive(rctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "%s: %v", msg, err)
}
