package hasql_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestThroughPgBouncer runs Managers against a cluster with a PgBouncer in
// front of every node, in session and in transaction mode, with the DSN's
// exec mode as pgx's default (prepared statements) and as the simple
// protocol (what the application's own queries need behind transaction
// mode): checks are right in every case, nothing runs on the servers between
// checks, and a master crash behind PgBouncer fails over.
func TestThroughPgBouncer(t *testing.T) {
	for _, mode := range []testcluster.PgBouncerMode{testcluster.PgBouncerSession, testcluster.PgBouncerTransaction} {
		t.Run(string(mode), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			c := testcluster.New(t, testcluster.Options{PgBouncer: mode})
			appMode := "cache_statement"
			if mode == testcluster.PgBouncerTransaction {
				appMode = "simple_protocol"
			}
			var ms []*hasql.Manager
			for _, exec := range []string{"cache_statement", "simple_protocol"} {
				// Several Managers side by side: in transaction mode they
				// share PgBouncer's server connections, and the prepared
				// check statement of one meets another's.
				for range 4 {
					m := newManager(t, ctx, withParams(c.DSN(), "default_query_exec_mode", exec, "hasql_check_interval", "100ms"))
					require.NoError(t, m.WaitReady(ctx, 1, 2))
					ms = append(ms, m)
				}
			}
			// Ten checks each, on shared server connections: every node's
			// check finishes after a mark ten times over.
			for range 10 {
				mark := time.Now()
				var behind atomic.Value // what was not checked yet, for the failure's message
				if !assert.Eventually(t, func() bool {
					for i, m := range ms {
						for _, n := range m.Nodes() {
							if !n.LastCheck.After(mark) {
								behind.Store(fmt.Sprintf("Manager %d: %s not checked since %s (up %v, last error %v)",
									i, n.Addr, n.LastCheck.Format(time.RFC3339Nano), n.Up, n.LastError))
								return false
							}
						}
					}
					return true
				}, time.Minute, 5*time.Millisecond) {
					t.Fatal(behind.Load())
				}
			}
			want := []hasql.Role{hasql.RoleMaster, hasql.RoleSyncReplica, hasql.RoleAsyncReplica}
			for i, m := range ms {
				st := m.Nodes()
				if !assert.Equal(t, want, []hasql.Role{st[0].Role, st[1].Role, st[2].Role}, "Manager %d", i) {
					for _, n := range st {
						t.Logf("Manager %d: %s %s sync_state %q, sync unknown %q, detached %q, error %v",
							i, n.Addr, n.Role, n.SyncState, n.SyncUnknown, n.Detached, n.LastError)
					}
					t.Logf("the master's walsenders: %s", walsenders(t, ctx, c.Master()))
				}
				for _, n := range st {
					assert.True(t, n.Up, "Manager %d: %s: %v", i, n.Addr, n.LastError)
				}
			}
			// Between checks nothing holds a server connection busy.
			for _, n := range c.Nodes() {
				conn, err := n.Conn(ctx)
				require.NoError(t, err)
				active := 0
				for range 50 {
					var k int
					require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
						WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()`).Scan(&k))
					active += k
					time.Sleep(7 * time.Millisecond)
				}
				conn.Close(ctx)
				assert.LessOrEqual(t, active, 10, "%s: no statement runs between checks", n)
			}

			app := newManager(t, ctx, withParams(c.DSN(), "default_query_exec_mode", appMode))
			require.NoError(t, app.WaitReady(ctx, 1, 2))
			_, err := app.Master().Exec(ctx, "CREATE TABLE bounced (id int PRIMARY KEY)")
			require.NoError(t, err)
			_, err = app.Master().Exec(ctx, "INSERT INTO bounced VALUES ($1)", 1)
			require.NoError(t, err)

			// The master crashes behind its PgBouncer (which stays up) and
			// the sync replica is promoted: every Manager follows.
			n1, n2 := c.Nodes()[0], c.Nodes()[1]
			require.NoError(t, n1.Kill())
			require.NoError(t, c.Failover(ctx, n2))
			require.Eventually(t, func() bool {
				_, err := app.Master().Exec(ctx, "INSERT INTO bounced VALUES ($1)", 2)
				return err == nil
			}, time.Minute, 10*time.Millisecond)
			for i, m := range append(ms, app) {
				require.Eventually(t, func() bool { return m.Stat().Master == n2.Addr() }, time.Minute, 10*time.Millisecond, "Manager %d", i)
			}
			var k int
			require.NoError(t, app.Master().QueryRow(ctx, "SELECT count(*) FROM bounced").Scan(&k))
			assert.Equal(t, 2, k)
		})
	}
}

// walsenders lists the application_name, state and sync_state of n's
// walsenders, for a failure's message.
func walsenders(t *testing.T, ctx context.Context, n *testcluster.Node) string {
	conn, err := n.Conn(ctx)
	if err != nil {
		return err.Error()
	}
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(ctx, `SELECT coalesce(string_agg(format('%s pid %s %s %s', application_name, pid, state, sync_state), '; '), 'none')
		FROM pg_stat_replication`).Scan(&s); err != nil {
		return err.Error()
	}
	return s
}
