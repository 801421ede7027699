//go:build linux

package hasql_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// The tests of this file attack what the decision core decides from what
// nodes say: a node that leaves the set, a server of another cluster, a
// clone of the cluster promoted elsewhere. Each failed on the code before
// the decision core (see the commit that added it).

func sysidOf(t *testing.T, ctx context.Context, n *testcluster.Node) uint64 {
	t.Helper()
	return uint64(lsnOn(t, ctx, n, "SELECT system_identifier FROM pg_control_system()"))
}

func nodesOf(nodes ...*testcluster.Node) []discovery.Node {
	out := make([]discovery.Node, len(nodes))
	for i, n := range nodes {
		out[i] = discovery.Node{Addr: n.Addr()}
	}
	return out
}

// traced records the decision trace of a Manager made with the option it
// returns and, once the test's Managers are closed, replays it into a fresh
// decision core: the same events must give the same decisions. With
// PGXHA_SAVE_TRACES set to a folder, the trace is kept there too (the
// fixtures of hasql/internal/topology/testdata come from it).
func traced(t *testing.T) hasql.Option {
	t.Helper()
	var buf syncBuffer
	t.Cleanup(func() {
		b := []byte(buf.String())
		n, err := hasql.ReplayDecisionTrace(bytes.NewReader(b))
		require.NoError(t, err, "replay of the decision trace")
		require.GreaterOrEqual(t, n, 2, "events in the trace: the config and the first node set at least")
		if dir := os.Getenv("PGXHA_SAVE_TRACES"); dir != "" {
			name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()) + ".jsonl"
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
		}
	})
	return hasql.WithDecisionTrace(&buf)
}

// waitUntil polls cond until it holds or ctx ends.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting until %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A master that leaves the discovered set while a transaction is open on
// it, and a replica promoted meanwhile: the commit must not land on the
// old master (its timeline is abandoned: the row would be lost). Before,
// the old master kept its connections: the cut on a new master walked the
// current set only, and the commit succeeded on n1.
func TestRemovedMasterIsCut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	execOn(t, ctx, n1, "CREATE TABLE removed_master (v int)")
	d := newSetDiscoverer(nodesOf(n1, n2, n3)...)
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"), hasql.WithDiscoverer(d))
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	tx, err := m.Master().Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(context.Background())
	_, err = tx.Exec(ctx, "INSERT INTO removed_master VALUES (1)")
	require.NoError(t, err)

	d.set(nodesOf(n2, n3)...) // n1 leaves, as a leader whose Patroni died
	waitUntil(t, ctx, "n1 left the set", func() bool { return len(m.Nodes()) == 2 })
	require.NoError(t, n2.Promote(ctx))
	waitUntil(t, ctx, "n2 is master", func() bool { return statusAt(m, n2).Role == hasql.RoleMaster })

	err = tx.Commit(ctx)
	require.Error(t, err, "the commit landed on n1, which left the set and whose timeline n2's promotion abandoned")

	var k int
	conn, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM removed_master").Scan(&k))
	assert.Zero(t, k, "the row is on n1")
}

// A replica of another cluster, named like our synchronous replica (every
// testcluster names its nodes n1, n2, ...), changes nothing about our
// nodes: before, it made our n2 "replica" with its sync state unknown
// (two nodes named n2), and SyncOnly reads failed.
func TestForeignNamesakeChangesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	b := testcluster.New(t, testcluster.Options{Replicas: 1})
	a2, b2 := a.Nodes()[1], b.Nodes()[1]
	dsn := withParams(a.DSN(), "hasql_check_interval", "100ms")
	dsn = strings.Replace(dsn, a.Nodes()[2].Addr(), a.Nodes()[2].Addr()+","+b2.Addr(), 1)
	m := newManager(t, ctx, dsn)
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	waitUntil(t, ctx, "the foreign n2 is detached", func() bool { return statusAt(m, b2).Role == hasql.RoleDetached })
	assert.Contains(t, statusAt(m, b2).Detached, "another cluster")
	st := statusAt(m, a2)
	assert.Equal(t, hasql.RoleSyncReplica, st.Role, "our n2: %+v", st)
	assert.Empty(t, st.SyncUnknown)
	var one int
	require.NoError(t, m.Replica(hasql.SyncOnly()).QueryRow(ctx, "SELECT 1").Scan(&one))
}

// A writable server of another cluster in the set is foreign, not a split
// brain: it is detached with its system identifier, writes go to our
// master, and no split brain is reported.
func TestForeignWritableIsNoSplitBrain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := testcluster.New(t, testcluster.Options{Replicas: 2})
	b := testcluster.New(t, testcluster.Options{Replicas: 0})
	a1, b1 := a.Nodes()[0], b.Nodes()[0]
	dsn := withParams(a.DSN(), "hasql_check_interval", "100ms")
	dsn = strings.Replace(dsn, a1.Addr(), a1.Addr()+","+b1.Addr(), 1)
	m := newManager(t, ctx, dsn)
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	st := statusAt(m, b1)
	waitUntil(t, ctx, "the foreign master is detached", func() bool { st = statusAt(m, b1); return st.Role == hasql.RoleDetached })
	assert.Contains(t, st.Detached, strconv.FormatUint(sysidOf(t, ctx, b1), 10))
	assert.False(t, st.SplitBrain)
	assert.False(t, m.Stat().SplitBrain)
	assert.Equal(t, hasql.RoleMaster, statusAt(m, a1).Role)
	conn, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	assert.Equal(t, "n1", nodeOf(a, conn))
	conn.Release()
}

// A clone of the cluster (same system identifier) promoted elsewhere and
// brought into the discovered set (a fake Patroni member, a stale DNS
// record) claims a newer timeline. Nothing vouches for it: not in the
// connection string, no replica streams from it. Before, it was elected
// master, the real master was called stale and writes went to the clone;
// after it left, writes stayed refused. Now it is detached, writes stay on
// the real master, and it changes nothing when it leaves.
func TestClonePromotedElsewhereTakesNoWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	execOn(t, ctx, n1, "CREATE TABLE clone_writes (v int)")
	dsn := withParams(c.DSN(), "hasql_check_interval", "100ms") // n1 and n2 only
	clone, err := c.AddNode(ctx)
	require.NoError(t, err)
	require.NoError(t, clone.Promote(ctx)) // timeline 2, the cluster's system identifier

	d := newSetDiscoverer(nodesOf(n1, n2)...)
	m := newManager(t, ctx, dsn, hasql.WithDiscoverer(d))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	d.set(nodesOf(n1, n2, clone)...)
	waitUntil(t, ctx, "the clone is detached", func() bool { return statusAt(m, clone).Role == hasql.RoleDetached })
	assert.Contains(t, statusAt(m, clone).Detached, "nothing vouches")
	assert.Equal(t, hasql.RoleMaster, statusAt(m, n1).Role)
	assert.False(t, statusAt(m, n1).StaleMaster)
	_, err = m.Master().Exec(ctx, "INSERT INTO clone_writes VALUES (1)")
	require.NoError(t, err)
	assert.EqualValues(t, 1, lsnOn(t, ctx, n1, "SELECT count(*) FROM clone_writes"))
	assert.EqualValues(t, 0, lsnOn(t, ctx, clone, "SELECT count(*) FROM clone_writes"))

	d.set(nodesOf(n1, n2)...)
	waitUntil(t, ctx, "the clone left", func() bool { return len(m.Nodes()) == 2 })
	_, err = m.Master().Exec(ctx, "INSERT INTO clone_writes VALUES (2)")
	require.NoError(t, err)
	assert.Equal(t, hasql.RoleMaster, statusAt(m, n1).Role)
}

// A server of another cluster, first in the discovered set and checked
// first, does not define the cluster: the connection string's hosts do.
// Pinned, the system identifier decides even among the connection
// string's own hosts.
func TestForeignServerFirstDefinesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := testcluster.New(t, testcluster.Options{Replicas: 1})
	b := testcluster.New(t, testcluster.Options{Replicas: 0})
	a1, a2, b1 := a.Nodes()[0], a.Nodes()[1], b.Nodes()[0]

	t.Run("discovered", func(t *testing.T) {
		d := newSetDiscoverer(nodesOf(b1, a1, a2)...)
		m := newManager(t, ctx, withParams(a.DSN(), "hasql_check_interval", "100ms"), hasql.WithDiscoverer(d))
		require.NoError(t, m.WaitReady(ctx, 1, 1))
		assert.Equal(t, hasql.RoleMaster, statusAt(m, a1).Role)
		waitUntil(t, ctx, "b1 detached", func() bool { return statusAt(m, b1).Role == hasql.RoleDetached })
		conn, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		assert.Equal(t, "n1", nodeOf(a, conn))
		assert.Equal(t, a1.Addr(), conn.Conn().PgConn().Conn().RemoteAddr().String())
		conn.Release()
	})
	t.Run("pinned", func(t *testing.T) {
		// Both in the connection string, b's master first: the pin says
		// which cluster is ours.
		dsn := withParams(a.DSN(), "hasql_check_interval", "100ms",
			"hasql_system_identifier", strconv.FormatUint(sysidOf(t, ctx, a1), 10))
		dsn = strings.Replace(dsn, a1.Addr(), b1.Addr()+","+a1.Addr(), 1)
		m := newManager(t, ctx, dsn)
		require.NoError(t, m.WaitReady(ctx, 1, 1))
		assert.Equal(t, hasql.RoleMaster, statusAt(m, a1).Role)
		waitUntil(t, ctx, "b1 detached", func() bool { return statusAt(m, b1).Role == hasql.RoleDetached })
		assert.Contains(t, statusAt(m, b1).Detached, "another cluster")
	})
}

// A replica that goes down and up again and again (a crash loop) is damped:
// after hasql_flap_count ups within hasql_flap_window it serves no reads
// until hasql_flap_cooldown has passed, and says so in its status.
func TestFlappingReplicaIsDamped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n2, n3 := c.Nodes()[1], c.Nodes()[2]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms",
		"hasql_flap_count", "2", "hasql_flap_window", "1m", "hasql_flap_cooldown", "6s"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	for i := 0; i < 2; i++ {
		require.NoError(t, n3.Kill())
		waitUntil(t, ctx, "n3 down", func() bool { return !statusAt(m, n3).Up })
		require.NoError(t, n3.Start())
		waitUntil(t, ctx, "n3 up", func() bool { return statusAt(m, n3).Up })
	}
	st := statusAt(m, n3)
	require.True(t, st.Damped, "n3 came back up twice within the window: %+v", st)
	// Its role stays once it streams again (just up, the master's walsenders
	// may not list it yet: detached until they do).
	waitUntil(t, ctx, "n3 a replica again", func() bool { return statusAt(m, n3).Role.IsReplica() })
	require.True(t, statusAt(m, n3).Damped, "the cool-down (6 s) ended while n3 reconnected")
	for i := 0; i < 20; i++ {
		conn, err := m.AcquireReplica(ctx)
		require.NoError(t, err)
		assert.Equal(t, n2.Name(), nodeOf(c, conn), "a read went to the damped n3")
		conn.Release()
	}
	// The cool-down ends: n3 serves reads again.
	waitUntil(t, ctx, "n3 no longer damped", func() bool { return !statusAt(m, n3).Damped })
	waitUntil(t, ctx, "a read on n3", func() bool {
		conn, err := m.AcquireReplica(ctx)
		if err != nil {
			return false
		}
		defer conn.Release()
		return nodeOf(c, conn) == n3.Name()
	})
}
