//go:build linux

package hasql_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/internal/chaos"
	"github.com/pgxha/pgxha/testcluster"
)

// servedBy is a chaos.Client whose reads record the server that served
// them, by its own port (inet_server_port: every Patroni node has the same
// cluster_name).
type servedBy struct {
	m *hasql.Manager

	mu     sync.Mutex
	byPort map[int]int // server port → reads served since the last reset
}

const patroniWriters, patroniReaders = 2, 2

func (c *servedBy) Write(ctx context.Context, writer, seq int) error {
	_, err := c.m.Master().Exec(ctx, chaos.InsertSQL, "patroni", writer, seq)
	return err
}

func (c *servedBy) Read(ctx context.Context, reader int) error {
	var port, seq int
	err := c.m.Replica().QueryRow(ctx, "SELECT inet_server_port(), coalesce(max(seq), 0) FROM "+chaos.Table+
		" WHERE client = 'patroni' AND writer = $1", reader%patroniWriters).Scan(&port, &seq)
	if err == nil {
		c.mu.Lock()
		c.byPort[port]++
		c.mu.Unlock()
	}
	return err
}

// reads returns the reads served by each node (of nodes) since the last
// reset, and resets the counts.
func (c *servedBy) reads(nodes ...*testcluster.Node) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for port, k := range c.byPort {
		name := "?"
		for _, n := range nodes {
			if strings.HasSuffix(n.DirectAddr(), ":"+strconv.Itoa(port)) {
				name = n.Name()
			}
		}
		out[name] += k
	}
	c.byPort = map[int]int{}
	return out
}

// waitReads waits until k more reads have been served, for a minute at most.
func waitReads(t *testing.T, ctx context.Context, load *chaos.Load, k int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	require.NoError(t, load.WaitReads(ctx, k))
}

// waitWrites waits until k more writes have been acknowledged, for two
// minutes at most.
func waitWrites(t *testing.T, ctx context.Context, load *chaos.Load, k int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	require.NoError(t, load.WaitWrites(ctx, k))
}

func statusNamed(m *hasql.Manager, name string) (hasql.NodeStatus, bool) {
	for _, st := range m.Nodes() {
		if st.Name == name {
			return st, true
		}
	}
	return hasql.NodeStatus{}, false
}

// The Manager follows a Patroni cluster through hasql_discovery=patroni
// while a read/write load runs: a member added joins and serves reads, a
// member removed leaves, Patroni's own failover is followed, noloadbalance
// keeps a replica out of reads (and it can still be promoted), nofailover
// is reported; no acknowledged write is lost.
func TestDiscoveryPatroni(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1, Backend: testcluster.BackendPatroni})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	all := []*testcluster.Node{n1, n2, n3}
	urls := n1.PatroniURL() + "," + n2.PatroniURL() + "," + n3.PatroniURL()
	before := goleak.IgnoreCurrent()
	m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "hasql_discovery", "patroni",
		"hasql_discovery_urls", urls, "hasql_discovery_interval", "200ms"), hasql.WithLogger(quiet))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	require.Eventually(t, func() bool {
		r := roles(m)
		return r["n1"] == hasql.RoleMaster && r["n2"] == hasql.RoleSyncReplica && r["n3"] == hasql.RoleAsyncReplica
	}, time.Minute, 10*time.Millisecond, "Patroni's member names are the nodes' names: %v", m.Nodes())
	assert.Equal(t, []string{n1.Addr(), n2.Addr(), n3.Addr()}, addrsOf(m), "the members' advertised addresses")
	assert.Contains(t, m.Stat().Discovery.Source, "patroni "+n1.PatroniURL())
	require.NoError(t, chaos.CreateTable(ctx, m.Master()))
	require.NoError(t, m.WaitCaughtUp(ctx), "readers find the table on every replica")

	client := &servedBy{m: m, byPort: map[int]int{}}
	// Writes wait for a master while Patroni elects one: longer than its ttl.
	load := chaos.Start(client, chaos.Config{Writers: patroniWriters, Readers: patroniReaders, OpTimeout: time.Minute})
	defer load.Stop()
	waitWrites(t, ctx, load, 20)
	waitReads(t, ctx, load, 20)

	var n4 *testcluster.Node
	t.Run("a member added joins and serves reads once it streams", func(t *testing.T) {
		var err error
		n4, err = c.AddNode(ctx)
		require.NoError(t, err)
		all = append(all, n4)
		waitRole(t, m, "n4", hasql.RoleAsyncReplica)
		st, _ := statusNamed(m, "n4")
		assert.Equal(t, n4.Addr(), st.Addr)
		client.reads()
		require.Eventually(t, func() bool {
			waitReads(t, ctx, load, 20)
			return client.reads(all...)["n4"] > 0
		}, time.Minute, time.Millisecond, "reads reach n4")
	})

	t.Run("a member removed leaves", func(t *testing.T) {
		removed := n3.Addr()
		fault := time.Now()
		require.NoError(t, c.RemoveNode(ctx, n3))
		require.Eventually(t, func() bool {
			_, ok := statusNamed(m, "n3")
			return !ok
		}, time.Minute, 10*time.Millisecond, "n3 leaves the set: %v", m.Nodes())
		assert.NotContains(t, addrsOf(m), removed)
		for _, ns := range m.Stat().Nodes {
			assert.NotEqual(t, removed, ns.Addr, "no pool statistics of a removed node")
		}
		client.reads()
		waitReads(t, ctx, load, 50)
		got := client.reads(all...)
		assert.Zero(t, got["n3"], "no read on n3 after it left: %v", got)
		assert.Positive(t, got["n2"]+got["n4"], "%v", got)
		res := load.Snapshot()
		assert.LessOrEqual(t, len(failedAfter(res.Reads, fault)), patroniReaders, "only reads in flight on n3 fail")
		assert.Empty(t, failedAfter(res.Writes, fault), "writes go on")
	})

	t.Run("Patroni's failover is followed", func(t *testing.T) {
		fault := time.Now()
		require.NoError(t, n1.Kill())
		require.Eventually(t, func() bool { return m.Stat().Master == n2.Addr() }, 2*time.Minute, 10*time.Millisecond,
			"Patroni promotes n2, the synchronous standby, and the Manager follows: %v", m.Nodes())
		waitWrites(t, ctx, load, 20) // on n2
		var tl int
		require.NoError(t, m.Master().QueryRow(ctx, timelineSQL).Scan(&tl))
		assert.Equal(t, 2, tl, "writes go to the new leader")
		// n1's member key expires: Patroni no longer lists it, so it
		// leaves the set.
		require.Eventually(t, func() bool {
			_, ok := statusNamed(m, "n1")
			return !ok
		}, time.Minute, 10*time.Millisecond, "the dead leader leaves the set: %v", m.Nodes())
		res := load.Snapshot()
		assert.LessOrEqual(t, len(failedAfter(res.Writes, fault)), patroniWriters, "writes wait for Patroni's promotion; only those in flight fail")
		assert.Empty(t, failedAfter(res.Reads, fault), "reads are on the replicas")

		require.NoError(t, n1.Start())
		require.NoError(t, c.Rejoin(ctx, n1))
		// Patroni picks the synchronous standby among n1 and n4.
		require.Eventually(t, func() bool {
			r := roles(m)["n1"]
			return r == hasql.RoleSyncReplica || r == hasql.RoleAsyncReplica
		}, 3*time.Minute, 10*time.Millisecond, "n1 is back as a replica: %v", m.Nodes())
	})

	t.Run("tags: noloadbalance keeps a replica out of reads, nofailover is reported", func(t *testing.T) {
		require.NoError(t, n4.SetPatroniTags(ctx, map[string]any{"noloadbalance": true}))
		require.NoError(t, n1.SetPatroniTags(ctx, map[string]any{"nofailover": true}))
		require.Eventually(t, func() bool {
			s4, _ := statusNamed(m, "n4")
			s1, _ := statusNamed(m, "n1")
			return s4.Tags["noloadbalance"] == "true" && s1.Tags["nofailover"] == "true"
		}, time.Minute, 10*time.Millisecond, "the tags reach NodeStatus: %v", m.Nodes())
		s4, _ := statusNamed(m, "n4")
		assert.Equal(t, map[string]string{"noloadbalance": "true"}, s4.Tags)
		assert.True(t, s4.Role.IsReplica(), "still a replica: %s", s4.Role)
		client.reads()
		waitReads(t, ctx, load, 50)
		got := client.reads(all...)
		assert.Zero(t, got["n4"], "no read on n4: %v", got)
		assert.Positive(t, got["n1"], "reads on n1, nofailover or not: %v", got)
		for i := 0; i < 20; i++ {
			conn, err := m.AcquireReplica(ctx)
			require.NoError(t, err)
			assert.Equal(t, "n1", nodeOf(c, conn))
			conn.Release()
		}

		// A noloadbalance replica is still a candidate: Patroni hands
		// over to it, and writes follow.
		fault := time.Now()
		require.NoError(t, c.Failover(ctx, n4))
		require.Eventually(t, func() bool { return m.Stat().Master == n4.Addr() }, time.Minute, 10*time.Millisecond,
			"the Manager follows the switchover: %v", m.Nodes())
		waitWrites(t, ctx, load, 20) // on n4
		res := load.Snapshot()
		assert.LessOrEqual(t, len(failedAfter(res.Writes, fault)), patroniWriters, "only writes in flight on n2 fail")
	})

	res := load.Stop()
	conn, err := c.Master().Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	lost, err := res.Lost(ctx, conn, "patroni")
	require.NoError(t, err)
	assert.Empty(t, lost, "every acknowledged write is on %s", c.Master())
	assert.Equal(t, "n4", c.Master().Name())
	assert.LessOrEqual(t, len(res.ReadErrors()), patroniReaders, "reads failed only when in flight on the member removed")
	assert.LessOrEqual(t, len(res.WriteErrors()), 2*patroniWriters, "writes failed only when in flight on a leader lost")
	t.Logf("%d writes acknowledged, %d write errors, %d reads, %d read errors", len(res.Acked()),
		len(res.WriteErrors()), len(res.Reads), len(res.ReadErrors()))
	for _, op := range append(res.WriteErrors(), res.ReadErrors()...) {
		t.Logf("error at %s: %v", op.End.Format("15:04:05.000"), op.Err)
	}
	m.Close()
	goleak.VerifyNone(t, append(ignoreProxies, before,
		// The nodes AddNode and Rejoin started, and their proxies.
		goleak.IgnoreAnyFunction("github.com/pgxha/pgxha/testcluster.(*patroniNode).start.func1"),
		goleak.IgnoreAnyFunction("github.com/pgxha/pgxha/testcluster/internal/faultproxy.(*Proxy).acceptLoop"))...)
}

// failedAfter returns the operations that failed after t.
func failedAfter(ops []chaos.Op, t time.Time) []chaos.Op {
	var out []chaos.Op
	for _, op := range ops {
		if op.Err != nil && op.End.After(t) {
			out = append(out, op)
		}
	}
	return out
}
