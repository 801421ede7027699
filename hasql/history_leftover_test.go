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

// plantHistory leaves in n's pg_wal the history file of timeline tl, a
// branch that forked off timeline 1 long before n's position (what an
// abandoned promotion leaves behind): PostgreSQL itself ignores it ("new
// timeline forked off current database system timeline before current
// recovery point") and n streams on on timeline 1.
func plantHistory(t *testing.T, ctx context.Context, n *testcluster.Node, tl string) {
	t.Helper()
	conn, err := n.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var dir string
	require.NoError(t, conn.QueryRow(ctx, "SHOW data_directory").Scan(&dir))
	_, err = conn.Exec(ctx, "COPY (SELECT 1, '0/1000000', 'abandoned promotion') TO '"+dir+"/pg_wal/"+tl+".history'")
	require.NoError(t, err)
}

func receiverStreaming(ctx context.Context, n *testcluster.Node) bool {
	conn, err := n.Conn(ctx)
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	var k int
	return conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'").Scan(&k) == nil && k == 1
}

// A planned restart of the master (a clean stop and start) while a replica
// holds such a leftover file: the replicas lose their walreceivers for the
// restart and stream again right after. Writes must come back with the
// master.
func TestMasterRestartWithLeftoverHistoryFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 0})
	n1, n3 := c.Nodes()[0], c.Nodes()[2]
	plantHistory(t, ctx, n3, "00000009")
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	require.NoError(t, n1.Stop())
	waitRole(t, m, "n1", hasql.RoleUnknown)
	// Let the fast checks see the replicas without their walreceivers.
	require.Eventually(t, func() bool { return !receiverStreaming(ctx, n3) }, 30*time.Second, 10*time.Millisecond)
	since := time.Now()
	require.Eventually(t, func() bool { return statusOf(m, "n3").LastCheck.After(since.Add(200 * time.Millisecond)) },
		30*time.Second, 5*time.Millisecond)
	require.NoError(t, n1.Start())
	require.Eventually(t, func() bool { return receiverStreaming(ctx, n3) }, 60*time.Second, 10*time.Millisecond, "n3 never streamed again")
	require.Eventually(t, func() bool { return statusOf(m, "n1").Role == hasql.RoleMaster }, 30*time.Second, 5*time.Millisecond,
		"n1 restarted, every replica streams from it on timeline 1, but: n1=%+v n3=%+v", statusOf(m, "n1"), statusOf(m, "n3"))
	_, err := m.Master().Exec(ctx, "CREATE TABLE after_restart (v int)")
	require.NoError(t, err)
}

func holdsHistory(ctx context.Context, n *testcluster.Node, name string) bool {
	conn, err := n.Conn(ctx)
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	var k int
	return conn.QueryRow(ctx, "SELECT count(*) FROM pg_ls_waldir() WHERE name = $1", name).Scan(&k) == nil && k == 1
}

// The leftover history file by PostgreSQL's own means (no file placed by
// hand): n1 is cut off from a failover script, which promotes n2 (its
// walreceiver had stopped: it is behind) and repoints n3 to it; n3, past
// the point where timeline 2 forks, cannot follow n2 but its walreceiver
// fetched 00000002.history. The promotion is abandoned before n2 took a
// write (n2 stopped for a rebuild, left out of the set), n1 stays the master and n3 is pointed
// back at it and streams on timeline 1, the file kept. docs/roles.md: such
// a file "proves nothing while it streams; while it does not, it keeps an
// older master stale until it streams again". A Manager started now sees
// n1 master; then n1 restarts (planned): n3 has no walreceiver for a moment,
// then streams again. Writes must come back with n1.
func TestAbandonedPromotionHistoryFileDoesNotBlockWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 0})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	ci := conninfoOf(t, ctx, n3)
	stopReceiver(t, ctx, n2)
	execOn(t, ctx, n1, "CREATE TABLE a AS SELECT g FROM generate_series(1, 1000) g")
	conn, err := n1.Conn(ctx)
	require.NoError(t, err)
	var pos string
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&pos))
	conn.Close(ctx)
	lsn, err := hasql.ParseLSN(pos)
	require.NoError(t, err)
	replayedOn(t, ctx, n3, lsn)

	require.NoError(t, n2.Promote(ctx)) // the script's; n1 runs on
	streamFrom(t, ctx, n3, ci, n1, n2)
	require.Eventually(t, func() bool { return holdsHistory(ctx, n3, "00000002.history") }, 30*time.Second, 10*time.Millisecond,
		"n3 never fetched timeline 2's history: %s", n3.Logs(10))
	require.NoError(t, n2.Stop()) // abandoned
	setConninfo(t, ctx, n3, ci)
	require.Eventually(t, func() bool { return receiverStreaming(ctx, n3) }, 30*time.Second, 10*time.Millisecond, "n3 back on n1: %s", n3.Logs(10))
	require.True(t, holdsHistory(ctx, n3, "00000002.history"))
	t.Logf("n3 streams from n1 on timeline 1 and holds 00000002.history")

	// n2, stopped for a rebuild, is left out of the set: while a node of the
	// set that may be on timeline 2 does not answer, the file keeps n1
	// stale (TestLeftBehindReplicaStreamingTheOldMasterKeepsTheNewTimeline).
	dsn := strings.Replace(c.DSN(), n2.Addr()+",", "", 1)
	require.NotEqual(t, c.DSN(), dsn)
	m := newManager(t, ctx, withParams(dsn, "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	_, err = m.Master().Exec(ctx, "CREATE TABLE before_restart (v int)")
	require.NoError(t, err)

	require.NoError(t, n1.Stop())
	waitRole(t, m, "n1", hasql.RoleUnknown)
	require.Eventually(t, func() bool { return !receiverStreaming(ctx, n3) }, 30*time.Second, 10*time.Millisecond)
	since := time.Now()
	require.Eventually(t, func() bool { return statusOf(m, "n3").LastCheck.After(since.Add(200 * time.Millisecond)) },
		30*time.Second, 5*time.Millisecond)
	require.NoError(t, n1.Start())
	require.Eventually(t, func() bool { return receiverStreaming(ctx, n3) }, 60*time.Second, 10*time.Millisecond, "n3 never streamed again")
	require.Eventually(t, func() bool { return statusOf(m, "n1").Role == hasql.RoleMaster }, 30*time.Second, 5*time.Millisecond,
		"n1 restarted, n3 streams from it on timeline 1, yet n1 is not master: n1 %+v, n3 %+v", statusOf(m, "n1"), statusOf(m, "n3"))
	_, err = m.Master().Exec(ctx, "CREATE TABLE after_restart (v int)")
	require.NoError(t, err)
}
