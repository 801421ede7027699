//go:build linux

package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/balancer"
	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// requireInUse fails unless every node's in-use count (the balancers'
// input) is want[addr] (0 for an address not in want).
func requireInUse(t *testing.T, m *hasql.Manager, want map[string]int64, msg string) {
	t.Helper()
	for addr, k := range hasql.InUse(m) {
		require.Equal(t, want[addr], k, "%s: in-use count of %s (all: %v)", msg, addr, hasql.InUse(m))
	}
}

// The in-use count least_busy and p2c read counts every connection handed
// out and nothing else: MinLSN acquires that ask replicas (and find them
// behind, or take the master after MinLSNWait) leave it at 0 once all is
// released, never below.
func TestInUseNeverDrifts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	m := newManager(t, ctx, c.DSN(), hasql.WithBalancer(balancer.LeastBusy()))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	requireInUse(t, m, nil, "at start")

	// Replicas stop replaying: a MinLSN acquire asks them, over and over,
	// and finds them behind.
	for _, n := range []*testcluster.Node{n2, n3} {
		require.NoError(t, n.PauseReplay(ctx))
	}
	_, err := m.Master().Exec(ctx, "CREATE TABLE drift (id int)")
	require.NoError(t, err)
	lsn, err := m.CurrentLSN(ctx)
	require.NoError(t, err)
	for range 5 {
		actx, acancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, err := m.AcquireReplica(actx, hasql.MinLSN(lsn))
		acancel()
		require.ErrorIs(t, err, hasql.ErrNoReplica, "no replica replayed the write")
		requireInUse(t, m, nil, "after a MinLSN acquire that found none")
	}
	conn, err := m.AcquireReplica(ctx, hasql.MinLSN(lsn), hasql.MinLSNWait(100*time.Millisecond), hasql.FallbackToMaster())
	require.NoError(t, err)
	assert.Equal(t, "n1", nodeOf(c, conn), "the master, after MinLSNWait")
	requireInUse(t, m, map[string]int64{n1.Addr(): 1}, "while the master's connection is held")
	conn.Release()
	requireInUse(t, m, nil, "after the fallback")

	// Replaying again: MinLSN acquires find the replicas by asking them.
	for _, n := range []*testcluster.Node{n2, n3} {
		require.NoError(t, n.ResumeReplay(ctx))
	}
	_, err = m.Master().Exec(ctx, "INSERT INTO drift VALUES (1)")
	require.NoError(t, err)
	lsn, err = m.CurrentLSN(ctx)
	require.NoError(t, err)
	var held []*pgxpool.Conn
	defer func() {
		for _, conn := range held {
			conn.Release()
		}
	}()
	for range 3 { // fewer than a pool's connections: all may go to one replica
		actx, acancel := context.WithTimeout(ctx, 30*time.Second)
		conn, err := m.AcquireReplica(actx, hasql.MinLSN(lsn))
		acancel()
		require.NoError(t, err, "in use: %v", hasql.InUse(m))
		held = append(held, conn)
	}
	var total int64
	for addr, k := range hasql.InUse(m) {
		assert.GreaterOrEqual(t, k, int64(0), addr)
		total += k
	}
	assert.EqualValues(t, len(held), total, "held connections are counted: %v", hasql.InUse(m))
	for _, conn := range held {
		conn.Release()
	}
	held = nil
	requireInUse(t, m, nil, "once all are released")
}

// A MinLSN acquire that waited in a replica's pool while the replica lost
// what the acquire asked for (the tag of WithTag, the sync state of
// SyncOnly) does not return it: it picks again, among replicas that still
// qualify.
func TestMinLSNRecheckKeepsOptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	a := map[string]string{"dc": "a"}
	d := newSetDiscoverer(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr(), Tags: a}, discovery.Node{Addr: n3.Addr(), Tags: a})
	m := newManager(t, ctx, withParams(c.DSN(), "pool_max_conns", "1", "hasql_check_interval", "100ms"),
		hasql.WithDiscoverer(d), hasql.WithBalancer(balancer.First()))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	require.Eventually(t, func() bool { return roles(m)["n2"] == hasql.RoleSyncReplica }, 30*time.Second, 10*time.Millisecond)

	// waitBehind holds n2's only connection, starts a MinLSN acquire with
	// opts that waits in n2's pool, runs change, releases the connection
	// and returns the node the acquire got.
	waitBehind := func(t *testing.T, change func(), opts ...hasql.ReplicaOption) string {
		lsn, err := m.CurrentLSN(ctx)
		require.NoError(t, err)
		require.NoError(t, m.WaitReplayed(ctx, lsn))
		held, err := m.AcquireReplica(ctx, opts...)
		require.NoError(t, err)
		require.Equal(t, "n2", nodeOf(c, held))
		got := make(chan string, 1)
		go func() {
			conn, err := m.AcquireReplica(ctx, append(opts, hasql.MinLSN(lsn))...)
			if err != nil {
				got <- err.Error()
				return
			}
			name := nodeOf(c, conn)
			conn.Release()
			got <- name
		}()
		require.Eventually(t, func() bool { return waitersInPools() == 1 }, 30*time.Second, 5*time.Millisecond,
			"the MinLSN acquire waits in n2's pool")
		change()
		held.Release()
		select {
		case node := <-got:
			return node
		case <-ctx.Done():
			t.Fatal("the MinLSN acquire did not return")
			return ""
		}
	}

	t.Run("WithTag", func(t *testing.T) {
		node := waitBehind(t, func() {
			d.set(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr(), Tags: map[string]string{"dc": "b"}},
				discovery.Node{Addr: n3.Addr(), Tags: a})
			require.Eventually(t, func() bool { return statusAt(m, n2).Tags["dc"] == "b" }, 30*time.Second, 5*time.Millisecond)
		}, hasql.WithTag("dc", "a"))
		assert.Equal(t, "n3", node, "n2 lost the tag while the acquire waited")
		requireInUse(t, m, nil, "once released")
	})

	t.Run("SyncOnly", func(t *testing.T) {
		d.set(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr(), Tags: a}, discovery.Node{Addr: n3.Addr(), Tags: a})
		require.Eventually(t, func() bool { return statusAt(m, n2).Tags["dc"] == "a" }, 30*time.Second, 5*time.Millisecond)
		node := waitBehind(t, func() {
			execOn(t, ctx, n1, "ALTER SYSTEM SET synchronous_standby_names = 'n3'", "SELECT pg_reload_conf()")
			require.Eventually(t, func() bool {
				r := roles(m)
				return r["n2"] == hasql.RoleAsyncReplica && r["n3"] == hasql.RoleSyncReplica
			}, 30*time.Second, 5*time.Millisecond)
		}, hasql.SyncOnly())
		assert.Equal(t, "n3", node, "n2 stopped being sync while the acquire waited")
		requireInUse(t, m, nil, "once released")
	})
}

// A connection taken out of its pool with Conn.Hijack is never released
// to it: the in-use count lets it go within a few checks, so that the
// balancers do not shun the node and acquires do not find its pool full
// (and wait the slow way) for ever after.
func TestInUseForgetsHijackedConns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1 := c.Nodes()[0]
	m := newManager(t, ctx, withParams(c.DSN(), "pool_max_conns", "3", "hasql_check_interval", "100ms"),
		hasql.WithBalancer(balancer.LeastBusy()))
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	var held []*pgxpool.Conn
	defer func() {
		for _, conn := range held {
			conn.Release() // a no-op for one released or hijacked already
		}
	}()
	for range 3 {
		conn, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		held = append(held, conn)
	}
	requireInUse(t, m, map[string]int64{n1.Addr(): 3}, "three held")
	hijacked := held[0].Hijack()
	defer hijacked.Close(context.Background())
	requireInUse(t, m, map[string]int64{n1.Addr(): 3}, "right after the hijack (nothing tells the pool's user)")
	held[1].Release()
	require.Eventually(t, func() bool { return hasql.InUse(m)[n1.Addr()] == 1 }, 30*time.Second, 10*time.Millisecond,
		"the hijacked connection leaves the count: %v", hasql.InUse(m))
	held[2].Release()
	requireInUse(t, m, nil, "all released")

	// The hijacked connection is the user's: it still works.
	var one int
	require.NoError(t, hijacked.QueryRow(ctx, "SELECT 1").Scan(&one))

	// Three connections can be held again, counted exactly.
	held = held[:0]
	for range 3 {
		conn, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		held = append(held, conn)
	}
	requireInUse(t, m, map[string]int64{n1.Addr(): 3}, "three held again")
	for _, conn := range held {
		conn.Release()
	}
	requireInUse(t, m, nil, "all released again")

	// It is still n1's connection for safety: once n2 is promoted (n1 runs
	// on, writable), the view that names n2 comes after n1's connections
	// are cut, the hijacked one with them.
	require.NoError(t, c.Nodes()[1].Promote(ctx))
	require.Eventually(t, func() bool { return roles(m)["n2"] == hasql.RoleMaster }, 30*time.Second, 10*time.Millisecond)
	_, err := hijacked.Exec(ctx, "CREATE TABLE written_on_the_old_master (id int)")
	require.Error(t, err, "the hijacked connection to n1 is cut before n2 is named master")
}
