//go:build linux

package hasql_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A sync replica (synchronous_commit = on, testcluster's and PostgreSQL's
// default) has every acknowledged commit flushed, not replayed: with its
// replay stopped (pg_wal_replay_pause, a recovery conflict,
// max_standby_streaming_delay) it shows none of them. The Manager loses
// sight of the master (a partition between them only): a PreferMaster
// read under MaxLag(1s) that went to the sync replica, whatever the lag
// limit, missed a commit the master acknowledged before the Manager lost
// it. Without a master no lag is known, and none qualifies.
func TestPreferMasterSkipsAPausedSyncReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, m, p := syncClusterBehindACut(t, ctx)
	n2, n3 := c.Nodes()[1], c.Nodes()[2]

	for _, n := range []*testcluster.Node{n2, n3} {
		require.NoError(t, n.PauseReplay(ctx))
	}
	_, err := m.Master().Exec(ctx, "INSERT INTO notes VALUES (1)")
	require.NoError(t, err, "acknowledged: the sync replica n2 flushed it")
	inserted := time.Now()

	p.cut() // the Manager no longer reaches n1; n2 and n3 still stream from it
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, 30*time.Second, 5*time.Millisecond)
	checkedSince(t, m, inserted, "n2", "n3")
	t.Logf("no master: n2 %+v", statusOf(m, "n2"))
	found, err := preferMaxLagRead(t, ctx, m, n2, "no master")
	require.False(t, err == nil && found == 0,
		"a PreferMaster read under MaxLag(1s) was served by a replica (the sync n2, its replay paused) without a commit the master acknowledged")
}

// The same with a sync replica that stopped streaming altogether while the
// Manager had no sight of the master: the master (Patroni, an operator)
// made another replica the sync one and acknowledged commits the former
// sync replica never received. The Manager still calls it sync (the role it
// had when a master was last known): PreferMaster must not read it under
// MaxLag(1s).
func TestPreferMasterSkipsAFormerSyncReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, m, p := syncClusterBehindACut(t, ctx)
	n1, n2 := c.Nodes()[0], c.Nodes()[1]

	p.cut() // the Manager no longer reaches n1
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, 30*time.Second, 5*time.Millisecond)
	stopReceiver(t, ctx, n2)
	execOn(t, ctx, n1, "ALTER SYSTEM SET synchronous_standby_names = 'n3'", "SELECT pg_reload_conf()")
	execOn(t, ctx, n1, "INSERT INTO notes VALUES (1)") // acknowledged once n3 has it
	checkedSince(t, m, time.Now(), "n2", "n3")
	t.Logf("no master: n2 %s (detached %q)", statusOf(m, "n2").Role, statusOf(m, "n2").Detached)

	found, err := preferMaxLagRead(t, ctx, m, n2, "no master")
	require.False(t, err == nil && found == 0,
		"a PreferMaster read under MaxLag(1s) was served by n2, no longer streaming nor sync, without an acknowledged commit")
}

// With a master known whose pool fails once (here: the application role's
// CONNECTION LIMIT is reached on the master), the sync replica, whose lag
// the Manager knows to be far over the limit, served a PreferMaster read
// under MaxLag(1s) without a commit the master acknowledged: the lag
// limits hold for every replica.
func TestPreferMasterPoolFailureKeepsTheLagLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	execOn(t, ctx, n1, "CREATE TABLE notes (id int PRIMARY KEY)",
		"CREATE ROLE app LOGIN PASSWORD 'a' CONNECTION LIMIT 2", "GRANT pg_monitor TO app", "GRANT SELECT, INSERT ON notes TO app")
	dsn := strings.Replace(c.DSN(), "postgres:pgxha@", "app:a@", 1)
	m := newManager(t, ctx, withParams(dsn, "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	waitRole(t, m, "n2", hasql.RoleSyncReplica)

	require.NoError(t, n2.PauseReplay(ctx))
	require.NoError(t, n3.PauseReplay(ctx))
	// app's second session on n1 (the Manager's check connection is the
	// first): app's limit on n1 is reached, the Manager's pool for n1 (empty:
	// nothing was acquired yet) cannot open one.
	// Other clients write on n1 (acknowledged: n2 flushes them).
	wconn, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer wconn.Close(context.Background())
	var k int
	var apps string
	require.NoError(t, wconn.QueryRow(ctx, "SELECT count(*), string_agg(application_name || ':' || state, ',') FROM pg_stat_activity WHERE usename = 'app'").Scan(&k, &apps))
	t.Logf("app's sessions on n1: %d (%s)", k, apps)
	_, err = wconn.Exec(ctx, "ALTER ROLE app CONNECTION LIMIT "+strconv.Itoa(k))
	require.NoError(t, err)
	_, err = wconn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app' AND application_name <> 'pgxha-check'")
	require.NoError(t, err)
	var hold *pgx.Conn
	require.Eventually(t, func() bool {
		hold, err = pgx.Connect(ctx, strings.Replace(n1.DirectDSN(), "postgres:pgxha@", "app:a@", 1))
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
	defer hold.Close(context.Background())
	require.NoError(t, wconn.QueryRow(ctx, "SELECT count(*), string_agg(application_name || ':' || state, ',') FROM pg_stat_activity WHERE usename = 'app'").Scan(&k, &apps))
	t.Logf("app's sessions on n1 now: %d (%s)", k, apps)
	_, err = wconn.Exec(ctx, "INSERT INTO notes VALUES (1)")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := wconn.Exec(ctx, "INSERT INTO notes SELECT max(id) + 1 FROM notes")
		require.NoError(t, err)
		st := statusOf(m, "n2")
		return st.LagKnown && st.Lag > 2*time.Second
	}, 30*time.Second, 100*time.Millisecond, "n2's lag known, over 2 s: %+v", statusOf(m, "n2"))
	t.Logf("n2: role %s lag %s known %v; master %s", statusOf(m, "n2").Role, statusOf(m, "n2").Lag, statusOf(m, "n2").LagKnown, m.Stat().Master)

	found, err := preferMaxLagRead(t, ctx, m, n2, "with the master known")
	require.False(t, err == nil && found == 0,
		"a PreferMaster read under MaxLag(1s) went to n2, whose lag the Manager knew to be over 2 s, without an acknowledged commit")
}

// syncClusterBehindACut starts a master with a sync and an async replica
// and a Manager that reaches the master through p (p.cut() takes the
// master out of its sight while the replicas stream on), with the notes
// table made and replayed everywhere.
func syncClusterBehindACut(t *testing.T, ctx context.Context) (*testcluster.Cluster, *hasql.Manager, *cutProxy) {
	t.Helper()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1 := c.Nodes()[0]
	p := newCutProxy(t, n1.DirectAddr())
	m := newManager(t, ctx, withParams(strings.Replace(c.DSN(), n1.Addr(), p.addr(), 1), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	waitRole(t, m, "n2", hasql.RoleSyncReplica)
	_, tok, err := m.Master().ExecToken(ctx, "CREATE TABLE notes (id int PRIMARY KEY)")
	require.NoError(t, err)
	replayedTo(t, m, tok.LSN)
	return c, m, p
}

// preferMaxLagRead reads row 1 of notes with PreferMaster and MaxLag(1s)
// within 2 s, logging where it was served (what says when).
func preferMaxLagRead(t *testing.T, ctx context.Context, m *hasql.Manager, n2 *testcluster.Node, what string) (found int, err error) {
	t.Helper()
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var onReplica bool
	var port string
	err = m.Replica(hasql.PreferMaster(), hasql.MaxLag(0, time.Second)).QueryRow(short,
		"SELECT count(*), pg_is_in_recovery(), current_setting('port') FROM notes WHERE id = 1").Scan(&found, &onReplica, &port)
	t.Logf("%s: PreferMaster+MaxLag(1s) read: found=%d onReplica=%v served by n2: %v err=%v", what, found, onReplica, port == portStr(n2.DirectAddr()), err)
	return found, err
}

// checkedSince waits until a check of each named node began after since:
// the one after the first to finish after since.
func checkedSince(t *testing.T, m *hasql.Manager, since time.Time, names ...string) {
	t.Helper()
	for _, name := range names {
		for range 2 {
			require.Eventually(t, func() bool { return statusOf(m, name).LastCheck.After(since) }, 30*time.Second, 5*time.Millisecond,
				"%s checked since %s: %+v", name, since, statusOf(m, name))
			since = statusOf(m, name).LastCheck
		}
	}
}

// The master, out of the Manager's sight, makes n3 its sync standby while
// n2 stops streaming, and acknowledges a commit n3 flushed; then n3 dies. A
// rule that exempted a sync replica from the lag limits unless another
// replica up showed WAL past it read n2 then, without the commit: under a
// lag limit no replica qualifies while no master is known.
func TestPreferMasterAfterTheReplicaAheadIsLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, m, p := syncClusterBehindACut(t, ctx)
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]

	p.cut() // the Manager no longer reaches n1
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, 30*time.Second, 5*time.Millisecond)
	stopReceiver(t, ctx, n2)
	execOn(t, ctx, n1, "ALTER SYSTEM SET synchronous_standby_names = 'n3'", "SELECT pg_reload_conf()")
	execOn(t, ctx, n1, "INSERT INTO notes VALUES (1)") // acknowledged once n3 flushed it
	checkedSince(t, m, time.Now(), "n2", "n3")

	t.Logf("n3 checked: LSN %s received %s; n2: LSN %s received %s", statusOf(m, "n3").LSN, statusOf(m, "n3").ReceiveLSN, statusOf(m, "n2").LSN, statusOf(m, "n2").ReceiveLSN)
	found, err := preferMaxLagRead(t, ctx, m, n2, "n3 up, past n2")
	require.False(t, err == nil && found == 0, "n3 is past n2")

	require.NoError(t, n3.Kill())
	require.Eventually(t, func() bool { return !statusOf(m, "n3").Up }, 30*time.Second, 5*time.Millisecond)
	checkedSince(t, m, time.Now(), "n2")
	t.Logf("n3 down; n2 %s LSN %s received %s", statusOf(m, "n2").Role, statusOf(m, "n2").LSN, statusOf(m, "n2").ReceiveLSN)
	found, err = preferMaxLagRead(t, ctx, m, n2, "n3 down")
	require.False(t, err == nil && found == 0,
		"a PreferMaster read under MaxLag(1s) was served by n2 without a commit the master acknowledged (the replica that had it is only down)")
}
