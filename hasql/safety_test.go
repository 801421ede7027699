package hasql_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// The tests of this file attack the safety invariants of DESIGN.md: each
// reproduces a way a write could reach a node that is not master, or a read
// a replica that does not follow it.

// timelineSQL is the timeline a writable server writes on.
const timelineSQL = "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"

func waitRole(t *testing.T, m *hasql.Manager, name string, role hasql.Role) {
	t.Helper()
	require.Eventually(t, func() bool { return roles(m)[name] == role }, 30*time.Second, 5*time.Millisecond,
		"%s never became %s: %v", name, role, m.Nodes())
}

func statusOf(m *hasql.Manager, name string) hasql.NodeStatus {
	for _, st := range m.Nodes() {
		if st.Name == name {
			return st
		}
	}
	return hasql.NodeStatus{}
}

// An acquire that waited inside the master's pool while the master lost its
// role does not hand out a connection to it.
func TestAcquireWaitingInDemotedPool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n2 := c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "pool_max_conns", "1", "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	held, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	require.Equal(t, "n1", nodeOf(c, held))

	type result struct {
		conn *pgxpool.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := m.AcquireMaster(ctx)
		done <- result{conn, err}
	}()
	// Let the second acquire get inside n1's pool, which has no free
	// connection (pgxpool does not count waiters).
	time.Sleep(200 * time.Millisecond)

	require.NoError(t, n2.Promote(ctx)) // n1 still runs, writable
	waitRole(t, m, "n2", hasql.RoleMaster)
	held.Release()

	r := <-done
	require.NoError(t, r.err)
	defer r.conn.Release()
	assert.Equal(t, "n2", nodeOf(c, r.conn), "the acquire that waited in n1's pool went to the new master")
	var tl int
	require.NoError(t, r.conn.QueryRow(ctx, timelineSQL).Scan(&tl))
	assert.Equal(t, 2, tl)
}

// A connection database/sql opens on a node that lost its role while it was
// connecting is not handed out.
func TestDBConnectRevalidates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "hasql_check_timeout", "5s"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	db := m.DB(hasql.TargetMaster)
	defer db.Close()

	// Connecting to n1 now takes a while: long enough to promote n2 and have
	// the manager see it before the connection to n1 is made.
	require.NoError(t, n1.SetLatency(400*time.Millisecond))
	type result struct {
		tl  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.err = db.QueryRowContext(ctx, timelineSQL).Scan(&r.tl)
		done <- r
	}()
	time.Sleep(50 * time.Millisecond) // the connection to n1 is under way
	require.NoError(t, n2.Promote(ctx))
	waitRole(t, m, "n2", hasql.RoleMaster)
	r := <-done
	require.NoError(t, r.err)
	assert.Equal(t, 2, r.tl, "the statement ran on the new master, on timeline 2")
}

// After a write acknowledged on timeline 2, the node left on timeline 1
// never becomes master again in that Manager, even when it is the only
// writable node; ForgetTimeline is the explicit way out.
func TestNoReturnToOlderTimeline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n2 := c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	require.NoError(t, n2.Promote(ctx)) // n1 runs on: a rogue promotion
	waitRole(t, m, "n2", hasql.RoleMaster)
	_, err := m.Master().Exec(ctx, "CREATE TABLE acked (v int)")
	require.NoError(t, err, "acknowledged on timeline 2")
	assert.Equal(t, hasql.RoleStaleMaster, roles(m)["n1"])

	require.NoError(t, n2.Kill())
	waitRole(t, m, "n2", hasql.RoleUnknown)
	st := statusOf(m, "n1")
	assert.True(t, st.StaleMaster && st.Writable, "n1 is writable but stale: %+v", st)
	assert.Empty(t, st.StaleBehind, "n1 is stale for its older timeline")
	assert.Equal(t, hasql.RoleStaleMaster, st.Role)

	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = m.Master().Exec(short, "CREATE TABLE lost (v int)")
	cancelShort()
	require.Error(t, err, "no write goes to the node on the older timeline")
	assert.ErrorIs(t, err, hasql.ErrStaleMaster)
	var se *hasql.StaleMasterError
	require.ErrorAs(t, err, &se)
	assert.EqualValues(t, 2, se.Timeline)
	assert.Equal(t, []string{""}, se.Behind, "n1 is stale for its older timeline, behind no replica: %v", se)
	assert.Contains(t, se.Error(), "writable on an older timeline than the cluster's 2")

	// The operator gives up timeline 2.
	m.ForgetTimeline()
	waitRole(t, m, "n1", hasql.RoleMaster)
	_, err = m.Master().Exec(ctx, "CREATE TABLE after_forget (v int)")
	require.NoError(t, err)
}

// A Manager started on a degraded cluster learns the newest timeline from a
// replica that follows it: the node left writable on timeline 1 is stale.
func TestStartedOnDegradedCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	require.NoError(t, n2.Promote(ctx))   // rogue: n1 runs on, on timeline 1
	require.NoError(t, c.Rejoin(ctx, n3)) // n3 follows n2 on timeline 2
	// A write on timeline 2 that n3 replays: n3 has WAL n1 never wrote.
	c2, err := n2.Conn(ctx)
	require.NoError(t, err)
	_, err = c2.Exec(ctx, "SET synchronous_commit = local")
	require.NoError(t, err)
	_, err = c2.Exec(ctx, "CREATE TABLE on_timeline_2 (v int)")
	require.NoError(t, err)
	var pos string
	require.NoError(t, c2.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&pos))
	c2.Close(ctx)
	require.Eventually(t, func() bool {
		return lsnOn(t, ctx, n3, "SELECT (pg_last_wal_replay_lsn() >= '"+pos+"'::pg_lsn)::int") == 1
	}, 30*time.Second, 10*time.Millisecond, "n3 replays timeline 2")
	require.NoError(t, n2.Kill())

	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.Eventually(t, func() bool { return statusOf(m, "n3").LastCheck.After(time.Time{}) && statusOf(m, "n1").StaleMaster },
		30*time.Second, 5*time.Millisecond, "n1 is stale: %v", m.Nodes())
	// n1 goes on writing (its own checkpoints, say) past n3's position:
	// what was learned stays learned.
	mc, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer mc.Close(ctx)
	for i := 0; i < 3; i++ { // WAL without a commit (a commit would wait for the dead sync replica)
		_, err = mc.Exec(ctx, "SELECT pg_switch_wal()")
		require.NoError(t, err)
		_, err = mc.Exec(ctx, "CHECKPOINT")
		require.NoError(t, err)
	}
	time.Sleep(500 * time.Millisecond)
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	conn, err := m.AcquireMaster(short)
	cancelShort()
	if err == nil {
		conn.Release()
	}
	assert.ErrorIs(t, err, hasql.ErrStaleMaster)
	assert.True(t, statusOf(m, "n1").StaleMaster, "%v", m.Nodes())
}

// A replica left following a dead master on the old timeline is detached:
// no reads, shown as such, while the new master serves the fallback.
func TestOrphanedReplicaIsDetached(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	require.NoError(t, n1.Kill())
	require.NoError(t, n2.Promote(ctx)) // n3 still follows the dead n1

	for _, name := range []string{"running", "new"} {
		t.Run(name, func(t *testing.T) {
			m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
			require.NoError(t, m.WaitReady(ctx, 1, 0))
			waitRole(t, m, "n3", hasql.RoleDetached)
			st := statusOf(m, "n3")
			assert.NotEmpty(t, st.Detached, "the status says why")
			for i := 0; i < 20; i++ {
				conn, err := m.AcquireReplica(ctx, hasql.FallbackToMaster())
				require.NoError(t, err)
				assert.Equal(t, "n2", nodeOf(c, conn), "reads never go to the orphan")
				conn.Release()
			}
			short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
			_, err := m.AcquireReplica(short)
			cancelShort()
			require.ErrorIs(t, err, hasql.ErrNoReplica)
			assert.Contains(t, err.Error(), "detached")
		})
	}
}

// A replica that cascades from another replica follows the master too.
func TestCascadingReplicaIsAttached(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n2, n3 := c.Nodes()[1], c.Nodes()[2]
	// Repoint n3 at n2.
	conn, err := n3.Conn(ctx)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port="+portStr(n2.DirectAddr())+" user=postgres password=pgxha application_name=n3'")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "SELECT pg_reload_conf()")
	require.NoError(t, err)
	conn.Close(ctx)
	require.Eventually(t, func() bool {
		c2, err := n2.Conn(ctx)
		if err != nil {
			return false
		}
		defer c2.Close(ctx)
		var k int
		return c2.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'n3'").Scan(&k) == nil && k == 1
	}, 30*time.Second, 20*time.Millisecond, "n3 streams from n2")

	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	waitRole(t, m, "n3", hasql.RoleAsyncReplica)
	assert.Empty(t, statusOf(m, "n3").Detached)
}

func portStr(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

// The lag of a replica that is behind when the Manager starts is not 0:
// unknown, or bounded by its last replay, and a lag limit keeps it out.
func TestLagOfStuckReplicaAtStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	mc, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer mc.Close(ctx)
	_, err = mc.Exec(ctx, "CREATE TABLE stuck (v int)")
	require.NoError(t, err)
	require.NoError(t, n2.PauseReplay(ctx))
	time.Sleep(1500 * time.Millisecond) // the last replayed commit ages
	_, err = mc.Exec(ctx, "INSERT INTO stuck SELECT generate_series(1, 1000)")
	require.NoError(t, err)

	m := newManager(t, ctx, withParams(c.DSN(), "hasql_max_lag", "1s", "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	require.Eventually(t, func() bool { return statusOf(m, "n2").LagBytes > 0 }, 10*time.Second, 5*time.Millisecond)
	st := statusOf(m, "n2")
	if st.LagKnown {
		assert.Greater(t, st.Lag, time.Second, "a replica behind by a commit 1.5s old is not 0s behind: %+v", st)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = m.AcquireReplica(short)
	cancelShort()
	assert.ErrorIs(t, err, hasql.ErrNoReplica, "with hasql_max_lag=1s the stuck replica serves no read")
	require.NoError(t, n2.ResumeReplay(ctx))
	require.Eventually(t, func() bool { st := statusOf(m, "n2"); return st.LagKnown && st.LagBytes == 0 }, 30*time.Second, 5*time.Millisecond)
}

// Read-your-writes with synchronous_commit off: the LSN CommitLSN and
// CurrentLSN return is past the commit record, so every MinLSN read sees
// the write.
func TestReadYourWritesAsyncCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	_, err := m.Master().Exec(ctx, "CREATE TABLE ryw (id int PRIMARY KEY)")
	require.NoError(t, err)
	for i := 0; i < 40; i++ {
		tx, err := m.Master().Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, "SET LOCAL synchronous_commit = off")
		require.NoError(t, err)
		_, err = tx.Exec(ctx, "INSERT INTO ryw VALUES ($1)", i)
		require.NoError(t, err)
		var lsn hasql.LSN
		if i%2 == 0 {
			lsn, err = hasql.CommitLSN(ctx, tx)
		} else {
			require.NoError(t, tx.Commit(ctx))
			lsn, err = m.CurrentLSN(ctx)
		}
		require.NoError(t, err)
		var found int
		require.NoError(t, m.Replica(hasql.MinLSN(lsn)).QueryRow(ctx, "SELECT count(*) FROM ryw WHERE id = $1", i).Scan(&found))
		assert.Equal(t, 1, found, "write %d read back from a replica at %s", i, lsn)
	}
	require.EqualValues(t, 0, inUseTotal(t, m))

	// A transaction of a *pgxpool.Pool is refused before it commits.
	pool, err := pgxpool.New(ctx, c.Nodes()[0].DSN())
	require.NoError(t, err)
	defer pool.Close()
	ptx, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = hasql.CommitLSN(ctx, ptx)
	require.ErrorIs(t, err, hasql.ErrCommitLSNPoolTx)
	require.NoError(t, ptx.Rollback(ctx))
}

// MinLSN with FallbackToMaster and a hung replica takes the master once
// MinLSNWait is over: no probe of the replica holds the caller.
func TestMinLSNHungReplicaFallsBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n2 := c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "10s", "hasql_check_timeout", "30s"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	conn, err := m.AcquireReplica(ctx) // an idle connection in n2's pool
	require.NoError(t, err)
	conn.Release()
	lsn, err := m.CurrentLSN(ctx)
	require.NoError(t, err)
	require.NoError(t, n2.Pause())
	defer n2.Resume()

	callCtx, cancelCall := context.WithTimeout(ctx, 20*time.Second)
	defer cancelCall()
	conn, err = m.AcquireReplica(callCtx, hasql.MinLSN(lsn+1<<20), hasql.FallbackToMaster(), hasql.MinLSNWait(100*time.Millisecond))
	require.NoError(t, err, "the master, once MinLSNWait is over")
	assert.Equal(t, "n1", nodeOf(c, conn))
	conn.Release()
	require.NoError(t, callCtx.Err(), "the caller's context did not have to end")
}

// A statement the master served (a replica read that fell back to it) is
// not run again when its connection is lost: the sequence advances once.
func TestNoRerunOfMasterStatement(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	_, err := m.Master().Exec(ctx, "CREATE SEQUENCE s")
	require.NoError(t, err)
	require.NoError(t, n2.Stop())
	waitRole(t, m, "n2", hasql.RoleUnknown)

	killer, err := n1.Conn(ctx)
	require.NoError(t, err)
	killed := make(chan bool, 1)
	go func() {
		defer killer.Close(context.Background())
		// Terminate the statement's backend while it sleeps.
		for i := 0; i < 500; i++ {
			var k int
			if killer.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'SELECT nextval%'").Scan(&k) == nil && k > 0 {
				killed <- true
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		killed <- false
	}()
	_, err = m.Replica(hasql.FallbackToMaster()).Exec(ctx, "SELECT nextval('s'), pg_sleep(1)")
	require.True(t, <-killed)
	require.Error(t, err, "the statement's backend was terminated")
	mc, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer mc.Close(ctx)
	var last int64
	require.NoError(t, mc.QueryRow(ctx, "SELECT last_value FROM s").Scan(&last))
	assert.EqualValues(t, 1, last, "nextval ran once")
}

// Sync is claimed only when it is known.
func TestSyncNotGuessed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	walsenders := func(want string) {
		t.Helper()
		require.Eventually(t, func() bool {
			conn, err := n1.Conn(ctx)
			if err != nil {
				return false
			}
			defer conn.Close(ctx)
			var got string
			err = conn.QueryRow(ctx, "SELECT string_agg(application_name || ':' || sync_state, ',' ORDER BY application_name, sync_state) FROM pg_stat_replication").Scan(&got)
			return err == nil && got == want
		}, 30*time.Second, 20*time.Millisecond, "pg_stat_replication never showed %s", want)
	}
	syncOnlyFails := func(m *hasql.Manager, why string) {
		t.Helper()
		short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancelShort()
		_, err := m.AcquireReplica(short, hasql.SyncOnly())
		require.ErrorIs(t, err, hasql.ErrNoReplica)
		assert.Contains(t, err.Error(), why)
	}

	t.Run("quorum members are quorum", func(t *testing.T) {
		execOn(t, ctx, n1, "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (n2, n3)'", "SELECT pg_reload_conf()")
		walsenders("n2:quorum,n3:quorum")
		m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
		waitRole(t, m, "n2", hasql.RoleQuorumReplica)
		waitRole(t, m, "n3", hasql.RoleQuorumReplica)
		assert.Equal(t, "quorum", statusOf(m, "n2").SyncState)
		syncOnlyFails(m, "not a sync replica (quorum)")
		execOn(t, ctx, n1, "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (n2)'", "SELECT pg_reload_conf()")
		walsenders("n2:sync,n3:async")
		waitRole(t, m, "n2", hasql.RoleSyncReplica)
	})

	t.Run("one name on two walsenders", func(t *testing.T) {
		for _, n := range []*testcluster.Node{n2, n3} {
			execOn(t, ctx, n, "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port="+portStr(n1.DirectAddr())+" user=postgres password=pgxha application_name=shared'",
				"SELECT pg_reload_conf()")
		}
		execOn(t, ctx, n1, "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (shared)'", "SELECT pg_reload_conf()")
		walsenders("shared:potential,shared:sync")
		m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
		require.Eventually(t, func() bool {
			st := m.Nodes()
			return st[1].Role == hasql.RoleReplica && st[2].Role == hasql.RoleReplica
		}, 30*time.Second, 5*time.Millisecond, "neither is claimed sync: %v", m.Nodes())
		for _, st := range m.Nodes()[1:] {
			assert.Contains(t, st.SyncUnknown, "more than one walsender")
		}
		syncOnlyFails(m, "sync state unknown")
		conn, err := m.AcquireReplica(ctx) // plain reads still go to them
		require.NoError(t, err)
		conn.Release()
		for _, n := range []*testcluster.Node{n2, n3} {
			execOn(t, ctx, n, "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port="+portStr(n1.DirectAddr())+" user=postgres password=pgxha application_name="+n.Name()+"'",
				"SELECT pg_reload_conf()")
		}
		execOn(t, ctx, n1, "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (n2)'", "SELECT pg_reload_conf()")
		walsenders("n2:sync,n3:async")
		waitRole(t, m, "n2", hasql.RoleSyncReplica)
		waitRole(t, m, "n3", hasql.RoleAsyncReplica)
	})

	t.Run("a check user without pg_monitor", func(t *testing.T) {
		execOn(t, ctx, n1, "CREATE ROLE watcher LOGIN PASSWORD 'w'")
		dsn := strings.Replace(c.DSN(), "postgres:pgxha@", "watcher:w@", 1)
		m := newManager(t, ctx, withParams(dsn, "hasql_check_interval", "100ms"))
		require.NoError(t, m.WaitReady(ctx, 1, 2))
		for _, st := range m.Nodes()[1:] {
			assert.Equal(t, hasql.RoleReplica, st.Role, "%s: never async or sync by guess", st.Name)
			assert.Contains(t, st.SyncUnknown, "pg_monitor")
		}
		syncOnlyFails(m, "pg_monitor")
		execOn(t, ctx, n1, "GRANT pg_monitor TO watcher")
		waitRole(t, m, "n2", hasql.RoleSyncReplica)
		waitRole(t, m, "n3", hasql.RoleAsyncReplica)
	})
}

// One server reached through two addresses is one server, not a split
// brain: writes go on.
func TestOneServerTwoAddresses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	alias, err := n1.Alias()
	require.NoError(t, err)
	dsn := strings.Replace(c.DSN(), n1.Addr()+",", n1.Addr()+","+alias+",", 1)
	require.Contains(t, dsn, alias)
	m := newManager(t, ctx, withParams(dsn, "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	st := m.Nodes()
	require.Len(t, st, 3)
	assert.Equal(t, n1.Addr(), st[1].SameAs)
	assert.Equal(t, hasql.RoleMaster, st[1].Role, "the alias has the role of the server it reaches")
	assert.False(t, st[0].SplitBrain || st[1].SplitBrain)
	for i := 0; i < 10; i++ {
		_, err := m.Master().Exec(ctx, "SELECT 1")
		require.NoError(t, err)
	}
	// The server's own address goes down: the alias stands for it.
	require.NoError(t, n1.Partition())
	require.Eventually(t, func() bool { st := m.Nodes(); return st[1].Role == hasql.RoleMaster && st[1].SameAs == "" }, 30*time.Second, 5*time.Millisecond)
	conn, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	assert.Equal(t, alias, conn.Conn().PgConn().Conn().RemoteAddr().String())
	conn.Release()
	require.NoError(t, n1.Heal())
	_ = n2
}

// A slow network to the only master does not sever the work in flight
// there: nothing else can take it.
func TestSlowOnlyMasterKeepsInFlight(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1 := c.Nodes()[0]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "hasql_check_timeout", "500ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	_, err := m.Master().Exec(ctx, "CREATE TABLE slow (v int)")
	require.NoError(t, err)

	tx, err := m.Master().Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "INSERT INTO slow VALUES (1)")
	require.NoError(t, err)
	require.NoError(t, n1.SetLatency(1200*time.Millisecond))
	require.Eventually(t, func() bool { return !statusOf(m, "n1").Up }, 30*time.Second, 5*time.Millisecond, "the master's checks time out")
	time.Sleep(time.Second) // the master stays down for a while
	require.NoError(t, n1.SetLatency(0))
	_, err = tx.Exec(ctx, "INSERT INTO slow VALUES (2)")
	require.NoError(t, err, "the transaction in flight on the only master was not cut")
	require.NoError(t, tx.Commit(ctx))
	var k int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM slow").Scan(&k))
	assert.Equal(t, 2, k)
}

// NoNodeError unwraps to the caller's context error, not to nodes' check
// timeouts; after Close, Changed is closed and no node has a role.
func TestNoNodeErrorAndClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n2 := c.Nodes()[1]
	m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "hasql_check_timeout", "200ms"), hasql.WithLogger(quiet))
	require.NoError(t, err)
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	require.NoError(t, n2.Partition())
	require.Eventually(t, func() bool { return !statusOf(m, "n2").Up }, 30*time.Second, 5*time.Millisecond)
	require.ErrorIs(t, statusOf(m, "n2").LastError, context.DeadlineExceeded, "the premise: the check timed out")

	callCtx, cancelCall := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, cancelCall)
	_, err = m.AcquireReplica(callCtx)
	require.ErrorIs(t, err, hasql.ErrNoReplica)
	assert.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "the caller cancelled; a node's check timeout is not the cause")
	var ne *hasql.NoNodeError
	require.ErrorAs(t, err, &ne)
	assert.Contains(t, err.Error(), "down: ")
	assert.Contains(t, err.Error(), "the master (no FallbackToMaster)")

	m.Close()
	select {
	case <-m.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("Changed after Close never closes")
	}
	for _, st := range m.Nodes() {
		assert.Equal(t, hasql.RoleUnknown, st.Role, "%s after Close", st.Addr)
		assert.ErrorIs(t, st.LastError, hasql.ErrClosed)
	}
	_, err = m.AcquireMaster(ctx)
	assert.ErrorIs(t, err, hasql.ErrClosed)
	require.NoError(t, n2.Heal())
}
