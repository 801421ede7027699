//go:build linux

package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/testcluster"
)

// The connection string's idle_session_timeout reaps idle pooled sessions
// (see TestDeadPooledSessions); a Listener's session, idle by nature, is
// not one of them: on a healthy master it stays, and loses nothing. That
// holds however the connection string spells the setting: as a keyword,
// in options (-c, --name=value), with a dash for an underscore, in
// another case (GUC names are case-insensitive).
func TestListenerOutlivesIdleSessionTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	master := c.Nodes()[0]
	for _, tc := range []struct{ name, suffix string }{
		{"keyword", "&idle_session_timeout=500"},
		{"options", "&options=-c%20idle_session_timeout%3D500"},
		{"dash", "&options=-c%20idle-session-timeout%3D500"},
		{"long", "&options=--idle_session_timeout%3D500"},
		{"upper-options", "&options=-c%20IDLE_SESSION_TIMEOUT%3D500"},
		{"upper-keyword", "&IDLE_SESSION_TIMEOUT=500"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := "pgxha-idle-" + tc.name
			m := newManager(t, ctx, withParams(c.DSN(), "application_name", app)+tc.suffix)
			require.NoError(t, m.WaitReady(ctx, 1, 0))
			l, err := m.Listen(ctx, "ev")
			require.NoError(t, err)
			defer l.Close()
			// Its last statement: a LISTEN, or the marker it sends (see sync).
			listenQuery := `application_name = '` + app + `' AND (query LIKE 'LISTEN%' OR query LIKE 'SELECT pg_notify(%')`
			listening := backendPids(t, ctx, master, listenQuery)
			require.Len(t, listening, 1)

			// A pooled session idle since after the Listener's last
			// statement: once the server has reaped it, the Listener's
			// would have gone before.
			_, err = m.Master().Exec(ctx, "SELECT 1")
			require.NoError(t, err)
			pooled := backendPids(t, ctx, master, `application_name = '`+app+`' AND query = 'SELECT 1'`)
			require.NotEmpty(t, pooled)
			waitGone(t, ctx, master, pooled)

			assert.Equal(t, listening, backendPids(t, ctx, master, listenQuery), "the Listener's session was reaped")
			execOn(t, ctx, master, "NOTIFY ev, 'after'")
			rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
			defer rcancel()
			n, err := l.Receive(rctx)
			require.NoError(t, err, "nothing was missed")
			assert.Equal(t, "after", n.Payload)
		})
	}
}
