//go:build linux

package hasql_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A replica's name is the application_name of its walreceiver, read back
// from pg_stat_wal_receiver.conninfo, which the server writes unquoted
// ("application_name=n2 east"), and found in the master's
// pg_stat_replication as the master shows it (cut to 63 bytes). Read
// with libpq's quoting rules ("n2", "n2east") or taken whole, the name
// was not the master's: a streaming sync standby was detached, with two
// replicas on one host not found by address either.
func TestReplicaNameAsTheMasterShowsIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	conn, err := n2.Conn(ctx)
	require.NoError(t, err)
	var base string
	require.NoError(t, conn.QueryRow(ctx, "SHOW primary_conninfo").Scan(&base))
	require.NoError(t, conn.Close(ctx))
	for _, name := range []string{"n2 east", "n2" + strings.Repeat("x", 68), `n2\\east`} {
		t.Run(name[:min(len(name), 10)], func(t *testing.T) {
			ci := base + " application_name='" + name + "'"
			execOn(t, ctx, n2, "ALTER SYSTEM SET primary_conninfo = '"+strings.ReplaceAll(ci, "'", "''")+"'", "SELECT pg_reload_conf()")
			var shown string
			require.Eventually(t, func() bool {
				conn, err := n1.Conn(ctx)
				if err != nil {
					return false
				}
				defer conn.Close(ctx)
				// The master's name for n2's walsender, made its sync standby.
				if conn.QueryRow(ctx, `SELECT application_name FROM pg_stat_replication WHERE application_name <> 'n3' AND state = 'streaming'`).Scan(&shown) != nil {
					return false
				}
				if _, err = conn.Exec(ctx, `ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 ("`+strings.ReplaceAll(shown, `"`, `""`)+`")'`); err != nil {
					return false
				}
				var k int
				return conn.QueryRow(ctx, `SELECT pg_reload_conf()`).Scan(new(bool)) == nil &&
					conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication WHERE application_name <> 'n3' AND state = 'streaming' AND sync_state = 'sync'`).Scan(&k) == nil && k == 1
			}, 30*time.Second, 10*time.Millisecond)
			// The Manager's view of n2 from before the change (the last
			// subtest's name, sync) stands until its next check of n2.
			require.Eventually(t, func() bool {
				st := statusAt(m, n2)
				return st.Name == shown && st.Role == hasql.RoleSyncReplica
			}, 30*time.Second, 10*time.Millisecond, "n2 is not a sync replica named %q, as the master shows it", shown)
		})
	}
}
