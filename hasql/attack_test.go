package hasql_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// The tests of this file attack the safety invariants of DESIGN.md from
// the unfriendly side: each one is a scenario in which a write or a read
// goes where it must not, or a healthy node is refused.

func execOn(t *testing.T, ctx context.Context, n *testcluster.Node, sqls ...string) {
	t.Helper()
	conn, err := n.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	for _, q := range sqls {
		_, err := conn.Exec(ctx, q)
		require.NoError(t, err, q)
	}
}

// statusAt is the status of the node at n's address.
func statusAt(m *hasql.Manager, n *testcluster.Node) hasql.NodeStatus {
	for _, st := range m.Nodes() {
		if st.Addr == n.Addr() {
			return st
		}
	}
	return hasql.NodeStatus{}
}

func lsnOn(t *testing.T, ctx context.Context, n *testcluster.Node, sql string) int64 {
	t.Helper()
	conn, err := n.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var v int64
	require.NoError(t, conn.QueryRow(ctx, sql).Scan(&v), sql)
	return v
}

// The textbook failover: the master crashes while a commit waits for its
// synchronous replica, whose stream had stopped; the asynchronous replica
// had received that commit's WAL (never acknowledged to anyone). The
// synchronous replica is promoted: it is the only writable node and the
// only one on the newest timeline (2). The asynchronous replica, left on
// timeline 1 with WAL past the fork point, does not follow the new master:
// it is the one to detach, not the new master to call stale.
func TestAttackPromotedReplicaBehindOrphanIsMaster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	_, err := m.Master().Exec(ctx, "CREATE TABLE tail_wal (v int, pad text)")
	require.NoError(t, err)

	// n2, the sync replica, stops receiving; a commit on n1 waits for it,
	// while its WAL streams to n3.
	require.NoError(t, n2.Stop())
	mc, err := n1.Conn(ctx)
	require.NoError(t, err)
	commitCtx, cancelCommit := context.WithCancel(ctx)
	defer cancelCommit()
	go func() {
		_, _ = mc.Exec(commitCtx, "INSERT INTO tail_wal SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g")
	}()
	require.Eventually(t, func() bool {
		return lsnOn(t, ctx, n1, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'") == 1
	}, 30*time.Second, 20*time.Millisecond, "the commit waits for n2")
	end := lsnOn(t, ctx, n1, "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8")
	require.Eventually(t, func() bool {
		return lsnOn(t, ctx, n3, "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8") >= end
	}, 30*time.Second, 20*time.Millisecond, "n3 replayed the unacknowledged commit")

	require.NoError(t, n1.Kill()) // the master crashes; the commit was never acknowledged
	require.NoError(t, n2.Start())
	require.NoError(t, n2.Promote(ctx)) // timeline 2, the newest
	require.Greater(t, lsnOn(t, ctx, n3, "SELECT (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::int8"),
		lsnOn(t, ctx, n2, "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8"),
		"the premise: n3 has WAL past the point where n2's timeline forked off")

	// n3 replayed the commit that was never acknowledged (and that the new
	// timeline does not have): it serves no read.
	var rows int
	require.Equal(t, 2000, int(lsnOn(t, ctx, n3, "SELECT count(*) FROM tail_wal")), "the premise: n3 shows the lost commit")
	for i := 0; i < 20; i++ {
		short, cancelShort := context.WithTimeout(ctx, time.Second)
		conn, err := m.AcquireReplica(short, hasql.FallbackToMaster())
		cancelShort()
		if err == nil {
			if nodeOf(c, conn) == "n3" {
				require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM tail_wal").Scan(&rows))
				assert.Fail(t, "a read went to n3, which shows a commit the cluster does not have", "rows %d, %v", rows, m.Nodes())
				conn.Release()
				break
			}
			conn.Release()
		}
	}

	writeCtx, cancelWrite := context.WithTimeout(ctx, 20*time.Second)
	defer cancelWrite()
	var tl int
	err = m.Master().QueryRow(writeCtx, timelineSQL).Scan(&tl)
	require.NoError(t, err, "the new master on the newest timeline takes writes: %v", m.Nodes())
	assert.Equal(t, 2, tl)
	st := statusOf(m, "n2")
	assert.Equal(t, hasql.RoleMaster, st.Role, "%+v", st)
	assert.False(t, st.StaleMaster, "n2 is on the newest timeline: %+v", st)
	waitRole(t, m, "n3", hasql.RoleDetached)
	assert.Regexp(t, `ahead|timeline 1`, statusOf(m, "n3").Detached, "why: it is ahead, or left on timeline 1")
}

// Debian's setup: every node has one cluster_name, pg_basebackup -R writes
// no application_name, so every walreceiver is known by that one name. n2
// streams from the master, n3 cascades from n2: the master's
// pg_stat_replication has one row of that name (n2's), n2's has one (n3's).
// n3 is attached (it cascades), but the master's row is not n3's: the
// master never waits for n3, and n3's lag is its own, not n2's.
func TestAttackSharedNameCascadeNotSync(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	execOn(t, ctx, n2, "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port="+portStr(n1.DirectAddr())+" user=postgres password=pgxha application_name=shared'",
		"SELECT pg_reload_conf()")
	execOn(t, ctx, n3, "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port="+portStr(n2.DirectAddr())+" user=postgres password=pgxha application_name=shared'",
		"SELECT pg_reload_conf()")
	execOn(t, ctx, n1, "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (shared)'", "SELECT pg_reload_conf()")
	for _, n := range []*testcluster.Node{n1, n2} {
		require.Eventually(t, func() bool {
			return lsnOn(t, ctx, n, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'shared' AND state = 'streaming'") == 1
		}, 30*time.Second, 20*time.Millisecond, "%s has one walsender named shared", n.Name())
	}

	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "hasql_max_lag", "1s"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	// The master's one row of that name is n2's, but two nodes go by it:
	// n2 is sync, or (not guessed) of unknown sync state; never n3.
	require.Eventually(t, func() bool {
		st := statusAt(m, n2)
		return st.Role == hasql.RoleSyncReplica || st.Role == hasql.RoleReplica && st.SyncUnknown != ""
	}, 30*time.Second, 5*time.Millisecond, "n2: %v", m.Nodes())

	// n3 stops replaying while the master writes.
	require.NoError(t, n3.PauseReplay(ctx))
	defer func() { _ = n3.ResumeReplay(ctx) }()
	_, err := m.Master().Exec(ctx, "CREATE TABLE cascade_lag (v int)")
	require.NoError(t, err)
	for i := 0; i < 30; i++ {
		_, err := m.Master().Exec(ctx, "INSERT INTO cascade_lag VALUES ($1)", i)
		require.NoError(t, err)
		time.Sleep(100 * time.Millisecond)
	}
	st := statusAt(m, n3)
	assert.NotEqual(t, hasql.RoleSyncReplica, st.Role, "n3 cascades from n2: the master never waits for it: %+v", st)
	assert.True(t, !st.LagKnown || st.LagBytes > 0, "n3's replay is paused 3s behind the master: its lag is not n2's: %+v", st)
	var stale []string
	for i := 0; i < 20; i++ {
		short, cancelShort := context.WithTimeout(ctx, time.Second)
		conn, err := m.AcquireReplica(short, hasql.SyncOnly())
		cancelShort()
		if errors.Is(err, hasql.ErrNoReplica) && statusAt(m, n2).Role == hasql.RoleReplica {
			continue // no replica is known to be sync: none is taken for one
		}
		require.NoError(t, err)
		var k int
		err = conn.QueryRow(ctx, "SELECT count(*) FROM cascade_lag").Scan(&k)
		if err != nil || k != 30 {
			stale = append(stale, fmt.Sprintf("%s: %d rows, %v", nodeOf(c, conn), k, err))
		}
		conn.Release()
	}
	assert.Empty(t, stale, "SyncOnly reads that miss commits the master acknowledged")
}

// sequenceOnReplica starts a master and a replica n2 and a Manager that
// checks every interval and does not watch for promotions (it sees one
// only at its next check), and creates sequence s, replayed on n2 before
// it returns.
func sequenceOnReplica(t *testing.T, ctx context.Context, interval string) (*testcluster.Cluster, *testcluster.Node, *hasql.Manager) {
	t.Helper()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n2 := c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", interval, "hasql_watch_promotion", "false", "pool_max_conns", "4"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	_, err := m.Master().Exec(ctx, "CREATE SEQUENCE s")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return lsnOn(t, ctx, n2, "SELECT count(*) FROM pg_class WHERE relname = 's'") == 1
	}, 30*time.Second, 10*time.Millisecond, "n2 replayed the sequence")
	return c, n2, m
}

// A replica promoted while the Manager has not seen it yet (no promotion
// watcher, a long check interval) serves a replica read: the statement
// runs on a writable server. Its connection is lost mid-run: the statement
// may have written (here nextval), so it is not run again. The pooled
// connection's in_hot_standby said "on" only because nothing was exchanged
// on it since the promotion.
func TestAttackNoRerunAfterUnseenPromotion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, n2, m := sequenceOnReplica(t, ctx, "10s")

	// Two idle connections in n2's pool, used just before the promotion
	// (pgxpool pings a connection idle for more than a second).
	var held []*pgxpool.Conn
	for i := 0; i < 2; i++ {
		conn, err := m.AcquireReplica(ctx)
		require.NoError(t, err)
		require.Equal(t, "n2", nodeOf(c, conn))
		_, err = conn.Exec(ctx, "SELECT 1")
		require.NoError(t, err)
		held = append(held, conn)
	}
	for _, conn := range held {
		conn.Release()
	}
	require.NoError(t, n2.Promote(ctx)) // rogue: n1 runs on, the Manager has not seen it
	require.True(t, statusOf(m, "n2").Role.IsReplica(), "the premise: the Manager has not seen the promotion")

	killer, err := n2.Conn(ctx)
	require.NoError(t, err)
	defer killer.Close(context.Background())
	killed := make(chan bool, 1)
	go func() {
		for i := 0; i < 500; i++ {
			var k int
			if killer.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'SELECT nextval%' AND pid <> pg_backend_pid()").Scan(&k) == nil && k > 0 {
				killed <- true
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		killed <- false
	}()
	runCtx, cancelRun := context.WithTimeout(ctx, 5*time.Second)
	_, err = m.Replica().Exec(runCtx, "SELECT nextval('s'), pg_sleep(1)")
	cancelRun()
	require.True(t, <-killed, "the first run's backend was terminated")
	t.Logf("Exec: %v", err)
	var last int64
	var called bool
	require.NoError(t, killer.QueryRow(ctx, "SELECT last_value, is_called FROM s").Scan(&last, &called))
	assert.EqualValues(t, 1, last, "nextval ran once on the promoted n2, whose run may have written")
}

// Patroni's layout: cluster_name is the cluster's scope, the same on every
// node, and primary_conninfo names each member. A check user without
// pg_monitor sees neither the walreceiver's conninfo nor its timeline, so it
// knows the replica by its cluster_name, which no walsender shows. The
// replica streams from the master all along: it is not "not streaming";
// it serves reads, or, if it cannot be told, the status says that the check
// user cannot see it (pg_monitor), not that it left the cluster.
func TestAttackRestrictedUserMemberNames(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	execOn(t, ctx, n2, "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port="+portStr(n1.DirectAddr())+" user=postgres password=pgxha application_name=member2'",
		"SELECT pg_reload_conf()")
	require.Eventually(t, func() bool {
		return lsnOn(t, ctx, n1, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'member2' AND state = 'streaming'") == 1
	}, 30*time.Second, 20*time.Millisecond, "n2 streams as member2")
	execOn(t, ctx, n1, "CREATE ROLE watcher LOGIN PASSWORD 'w'")
	// n2 has the role before the Manager logs in there (a login refused
	// meanwhile is a check of n2 too).
	require.Eventually(t, func() bool {
		return lsnOn(t, ctx, n2, "SELECT count(*) FROM pg_roles WHERE rolname = 'watcher'") == 1
	}, 30*time.Second, 10*time.Millisecond, "n2 replays the role")
	dsn := strings.Replace(c.DSN(), "postgres:pgxha@", "watcher:w@", 1)

	m := newManager(t, ctx, withParams(dsn, "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	// A few rounds of checks of n2.
	seen, checks := statusAt(m, n2).LastCheck, 0
	require.Eventually(t, func() bool {
		if st := statusAt(m, n2); st.LastCheck.After(seen) {
			seen, checks = st.LastCheck, checks+1
		}
		return checks >= 5
	}, 30*time.Second, 5*time.Millisecond, "five checks of n2")
	st := statusAt(m, n2)
	if st.Role == hasql.RoleDetached {
		assert.NotContains(t, st.Detached, "not streaming", "n2 streams from the master; the check user just cannot see it: %+v", st)
		assert.Contains(t, st.Detached, "pg_monitor", "the reason names what the check user lacks: %+v", st)
	} else {
		assert.True(t, st.Role.IsReplica(), "%+v", st)
	}
}

// Friendly faults raise no false alarm: after a failover, a rejoin, a
// replica restart and a second failover right after, with WAL idle and a
// lag limit, no node is called stale or detached, lag is known, and the
// old master restarted on timeline 2 is not master. (Passes.)
func TestAttackHeldNoFalseAlarms(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "hasql_max_lag", "2s"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	_, err := m.Master().Exec(ctx, "CREATE TABLE h (v int)")
	require.NoError(t, err)
	require.NoError(t, n1.Kill())
	require.NoError(t, c.Failover(ctx, n2))
	waitRole(t, m, "n2", hasql.RoleMaster)
	waitRole(t, m, "n3", hasql.RoleSyncReplica)
	_, err = m.Master().Exec(ctx, "INSERT INTO h VALUES (1)")
	require.NoError(t, err)
	require.NoError(t, c.Rejoin(ctx, n1))
	require.Eventually(t, func() bool { return roles(m)["n1"].IsReplica() }, 30*time.Second, 5*time.Millisecond, "%v", m.Nodes())
	// Replica restart.
	require.NoError(t, n3.Stop())
	require.NoError(t, n3.Start())
	waitRole(t, m, "n3", hasql.RoleSyncReplica)
	// WAL idle: lag known, within limit, for a while.
	for i := 0; i < 20; i++ {
		for _, st := range m.Nodes() {
			if st.Role.IsReplica() {
				require.True(t, st.LagKnown && st.Lag < 2*time.Second, "%+v", st)
			}
			require.False(t, st.StaleMaster || st.Role == hasql.RoleDetached, "%+v", st)
		}
		conn, err := m.AcquireReplica(ctx)
		require.NoError(t, err)
		conn.Release()
		time.Sleep(100 * time.Millisecond)
	}
	// Second failover right after the first: n3 (sync) takes over, n2 killed.
	require.NoError(t, n2.Kill())
	require.NoError(t, c.Failover(ctx, n3))
	waitRole(t, m, "n3", hasql.RoleMaster)
	var k int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM h").Scan(&k))
	require.Equal(t, 1, k)
	require.NoError(t, n2.Start()) // old master on timeline 2, cluster on 3
	require.Eventually(t, func() bool { return statusOf(m, "n2").Up }, 30*time.Second, 5*time.Millisecond)
	st := statusOf(m, "n2")
	t.Logf("n2 after restart: %s stale=%v", st.Role, st.StaleMaster)
	require.NotEqual(t, hasql.RoleMaster, st.Role)
	conn, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	require.Equal(t, "n3", nodeOf(c, conn))
	conn.Release()
}
