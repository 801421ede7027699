//go:build linux

package hasql_test

import (
	"context"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

func confSet(t *testing.T, ctx context.Context, n *testcluster.Node, name, value string) {
	t.Helper()
	conn, err := n.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "ALTER SYSTEM SET "+name+" = '"+strings.ReplaceAll(value, "'", "''")+"'")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "SELECT pg_reload_conf()")
	require.NoError(t, err)
}

func showOn(t *testing.T, ctx context.Context, n *testcluster.Node, sql string) string {
	t.Helper()
	conn, err := n.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var v string
	require.NoError(t, conn.QueryRow(ctx, sql).Scan(&v), sql)
	return v
}

// n3, a replica the connection string names, cascades from n4, a standby
// outside the node set whose walreceiver goes by the same name ("n3", as
// Debian's shared cluster_name "15/main" makes every walreceiver's name
// one). The master lists one walsender of that name: n4's. n3 was taken
// for that row: claimed sync (a cascading replica is never waited for), and
// SyncOnly reads went to it. Its sync state is unknown: the row may be
// another standby's.
func TestCascadeFromOutsiderLeavesItsRow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 3, SyncReplicas: 1})
	n1, n3, n4 := c.Nodes()[0], c.Nodes()[2], c.Nodes()[3]

	// n4 streams from n1 as "n3"; n3 streams from n4 (a cascade).
	ci4 := showOn(t, ctx, n4, "SHOW primary_conninfo")
	confSet(t, ctx, n4, "primary_conninfo", regexp.MustCompile(`application_name=\S+`).ReplaceAllString(ci4, "application_name=n3"))
	host, port, err := net.SplitHostPort(n4.DirectAddr())
	require.NoError(t, err)
	ci3 := showOn(t, ctx, n3, "SHOW primary_conninfo")
	ci3 = regexp.MustCompile(`host=\S+`).ReplaceAllString(ci3, "host="+host)
	ci3 = regexp.MustCompile(`port=\S+`).ReplaceAllString(ci3, "port="+port)
	confSet(t, ctx, n3, "primary_conninfo", ci3)
	// The master waits for "n3" (n4's walreceiver).
	confSet(t, ctx, n1, "synchronous_standby_names", "FIRST 1 (n3)")
	require.Eventually(t, func() bool {
		return showOn(t, ctx, n1, "SELECT coalesce(string_agg(application_name||':'||sync_state, ',' ORDER BY application_name), '') FROM pg_stat_replication") == "n2:async,n3:sync" &&
			showOn(t, ctx, n3, "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), '')") == "streaming" &&
			showOn(t, ctx, n3, "SELECT coalesce((SELECT sender_port::text FROM pg_stat_wal_receiver), '')") == port
	}, 30*time.Second, 20*time.Millisecond, "n4 streams from n1 as n3, n3 from n4")

	dsn := strings.Replace(c.DSN(), ","+n4.Addr(), "", 1)
	require.NotContains(t, dsn, n4.Addr())
	m := newManager(t, ctx, withParams(dsn, "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	require.Eventually(t, func() bool { return statusOf(m, "n3").Role.IsReplica() }, 10*time.Second, 5*time.Millisecond,
		"n3 gets a replica role: %v", m.Nodes())
	st := statusOf(m, "n3")
	t.Logf("n3: role %s, sync state %q, unknown %q, lag %d bytes", st.Role, st.SyncState, st.SyncUnknown, st.LagBytes)
	require.Equal(t, hasql.RoleReplica, st.Role, "n3 cascades from n4: the master never waits for it")
	require.Contains(t, st.SyncUnknown, "may be another standby's")
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	conn, err := m.AcquireReplica(short, hasql.SyncOnly())
	cancelShort()
	if err == nil {
		got := nodeOf(c, conn)
		conn.Release()
		require.NotEqual(t, "n3", got, "a SyncOnly read went to n3")
	}
}
