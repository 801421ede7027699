//go:build linux

package testcluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/testcluster"
)

// patroniFailoverBound bounds the wait for Patroni to elect a new leader on
// its own: the dead leader's key expires (ttl), then the next HA loop
// promotes the synchronous standby. It is a bound, not a measurement (see
// BenchmarkPatroniFailover).
const patroniFailoverBound = 60 * time.Second

// tryWrite inserts a row through dsn within a short deadline.
func tryWrite(ctx context.Context, dsn string, id int, v string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "INSERT INTO t VALUES ($1, $2)", id, v)
	return err
}

// streamingFrom returns application_name → sync_state of the replicas that
// stream from n, or an error; for polling, where require cannot be used.
func streamingFrom(ctx context.Context, n *testcluster.Node) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := n.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT application_name, sync_state FROM pg_stat_replication WHERE state = 'streaming'")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for rows.Next() {
		var app, st string
		if err := rows.Scan(&app, &st); err != nil {
			return nil, err
		}
		out[app] = st
	}
	return out, rows.Err()
}

// killLeaderAndWait kills the leader and waits until Patroni, on its own,
// has another node accept writes (row id); it returns that node and the time
// from the kill to the first accepted write.
func killLeaderAndWait(ctx context.Context, c *testcluster.Cluster, old *testcluster.Node, id int) (*testcluster.Node, time.Duration, error) {
	if err := old.Kill(); err != nil {
		return nil, 0, err
	}
	killed := time.Now()
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	deadline := time.After(patroniFailoverBound)
	var m *testcluster.Node
	var last error
	for {
		if m = c.Master(); m != nil && m != old {
			if last = tryWrite(ctx, m.DSN(), id, "after kill"); last == nil {
				return m, time.Since(killed), nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-deadline:
			return nil, 0, fmt.Errorf("no new leader accepted writes within %s of the kill (master: %v, last write error: %v)", patroniFailoverBound, m, last)
		case <-ticker.C:
		}
	}
}

func TestPatroniFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1, Backend: testcluster.BackendPatroni})
	nodes := c.Nodes()
	require.Len(t, nodes, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	require.Equal(t, n1, c.Master(), "node 0 bootstraps and leads")

	t.Run("roles", func(t *testing.T) {
		states := replication(t, ctx, n1)
		roles := []string{states["n2"], states["n3"]}
		sort.Strings(roles)
		assert.Equal(t, []string{"async", "sync"}, roles, "one sync and one async replica: %v", states)
		assert.Equal(t, map[string]string{"n2": "sync", "n3": "async"}, states, "the first SyncReplicas replicas are the sync ones")
		assert.Equal(t, []*testcluster.Node{n2}, c.SyncReplicas())
		assert.False(t, inRecovery(t, ctx, n1.DSN()))
		assert.True(t, inRecovery(t, ctx, n2.DSN()))
		assert.True(t, inRecovery(t, ctx, n3.DSN()))
	})

	t.Run("write on master, read on a replica", func(t *testing.T) {
		conn := connect(t, ctx, n1.DSN())
		_, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, v text)")
		require.NoError(t, err)
		_, err = conn.Exec(ctx, "INSERT INTO t VALUES (1, 'one')")
		require.NoError(t, err)
		waitRow(t, ctx, n2.DSN(), 1)
		waitRow(t, ctx, n3.DSN(), 1)
	})

	t.Run("kill the master: Patroni promotes the sync replica on its own", func(t *testing.T) {
		sync := c.SyncReplicas()
		require.Len(t, sync, 1)
		_, err := connect(t, ctx, n1.DSN()).Exec(ctx, "INSERT INTO t VALUES (2, 'before kill')")
		require.NoError(t, err, "synchronous commit: acknowledged means on %s", sync[0])

		next, took, err := killLeaderAndWait(ctx, c, n1, 3)
		require.NoError(t, err)
		t.Logf("leader killed; %s accepted writes %s later", next, took.Round(time.Millisecond))
		assert.Equal(t, sync[0], next, "in synchronous mode Patroni promotes the synchronous standby")
		assert.Equal(t, next, c.Master())
		assert.False(t, n1.Running())
		_, err = net.DialTimeout("tcp", n1.Addr(), time.Second)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED, "a killed node refuses connections")
		waitRow(t, ctx, next.DSN(), 2)

		require.NoError(t, n1.Start())
		require.NoError(t, c.Rejoin(ctx, n1), "the old master streams from the new one")
		assert.Equal(t, next, c.Master())
		assert.True(t, inRecovery(t, ctx, n1.DSN()), "the old master came back as a replica")
		waitRow(t, ctx, n1.DSN(), 3)
		var states map[string]string
		require.Eventually(t, func() bool {
			var err error
			states, err = streamingFrom(ctx, next)
			return err == nil && len(states) == 2 && len(c.SyncReplicas()) == 1
		}, 30*time.Second, 50*time.Millisecond, "both other nodes stream from %s, one of them sync: %v", next, states)
		assert.Contains(t, states, "n1")
	})

	t.Run("Failover hands over to an async replica", func(t *testing.T) {
		master := c.Master()
		require.NotNil(t, master)
		var to *testcluster.Node
		for _, n := range nodes {
			if n != master && !slices.Contains(c.SyncReplicas(), n) {
				to = n
			}
		}
		require.NotNil(t, to)
		require.NoError(t, c.Failover(ctx, to))
		assert.Equal(t, to, c.Master())
		assert.False(t, inRecovery(t, ctx, to.DSN()))
		require.NoError(t, tryWrite(ctx, to.DSN(), 4, "after switchover"))
		assert.True(t, inRecovery(t, ctx, master.DSN()), "the former master follows")
		waitRow(t, ctx, master.DSN(), 4)
		require.Eventually(t, func() bool {
			st, err := streamingFrom(ctx, to)
			return err == nil && len(st) == 2 && len(c.SyncReplicas()) == 1
		}, 30*time.Second, 50*time.Millisecond, "the others stream from %s, one of them sync", to)
	})
}

func TestPatroniNothingLeaksAfterStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := testcluster.Start(ctx, testcluster.Options{Replicas: 1, Backend: testcluster.BackendPatroni})
	require.NoError(t, err, "run `make deps` if patroni or etcd is missing")
	dir := c.Dir()
	var addrs []string
	for _, n := range c.Nodes() {
		addrs = append(addrs, n.Addr(), n.DirectAddr())
	}
	procs := serverProcesses(t, dir)
	require.NotEmpty(t, procs, "the cluster runs")
	for _, want := range []string{"etcd", "patroni"} {
		assert.True(t, slices.ContainsFunc(procs, func(p string) bool { return strings.Contains(p, want) }), "%s runs: %v", want, procs)
	}
	require.NoError(t, c.Nodes()[1].Pause(), "a paused node must not stop Stop")
	require.NoError(t, c.Stop())
	require.NoError(t, c.Stop(), "Stop is idempotent")
	assert.Empty(t, serverProcesses(t, dir))
	_, err = os.Stat(dir)
	assert.True(t, os.IsNotExist(err), "the cluster directory is removed")
	for _, a := range addrs {
		_, err := net.DialTimeout("tcp", a, time.Second)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED, "nothing listens on %s", a)
	}
}

// BenchmarkPatroniFailover measures, per cluster, the time from the kill of
// the leader to the first write accepted by the node Patroni promoted, and
// reports the minimum, median and maximum.
func BenchmarkPatroniFailover(b *testing.B) {
	ctx := context.Background()
	var took []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c, err := testcluster.Start(ctx, testcluster.Options{Backend: testcluster.BackendPatroni})
		if err != nil {
			b.Fatal(err)
		}
		conn, err := pgx.Connect(ctx, c.Master().DSN())
		if err == nil {
			_, err = conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, v text)")
			conn.Close(ctx)
		}
		if err != nil {
			c.Stop()
			b.Fatal(err)
		}
		b.StartTimer()
		_, d, err := killLeaderAndWait(ctx, c, c.Master(), 1)
		b.StopTimer()
		if err != nil {
			for _, n := range c.Nodes() {
				b.Logf("last lines of %s's log:\n%s", n, n.Logs(80))
			}
			c.Stop()
			b.Fatal(err)
		}
		took = append(took, d)
		if err := c.Stop(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[0].Milliseconds()), "min-ms")
	b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "median-ms")
	b.ReportMetric(float64(took[len(took)-1].Milliseconds()), "max-ms")
}

// patroniMember returns a member's entry in GET /cluster from the API at
// base, or an error; for polling, where require cannot be used.
func patroniMember(ctx context.Context, base, name string) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/cluster", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var cl struct {
		Members []map[string]any `json:"members"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&cl); err != nil {
		return nil, err
	}
	for _, m := range cl.Members {
		if m["name"] == name {
			return m, nil
		}
	}
	return nil, fmt.Errorf("%s is not a member: %v", name, cl.Members)
}

// patroniStatus returns the HTTP status of GET path on the API at base.
func patroniStatus(t *testing.T, ctx context.Context, base, path string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func TestPatroniTags(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1, Backend: testcluster.BackendPatroni})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	require.NotEmpty(t, n1.PatroniURL())
	require.NotEqual(t, n1.PatroniURL(), n2.PatroniURL())

	m, err := patroniMember(ctx, n1.PatroniURL(), "n2")
	require.NoError(t, err)
	assert.Nil(t, m["tags"], "no tag is listed at first (false booleans are not)")
	// Patroni answers /replica with 200 once it has seen the member stream
	// (a loop or two after start-up).
	require.Eventually(t, func() bool { return patroniStatus(t, ctx, n2.PatroniURL(), "/replica") == http.StatusOK },
		time.Minute, 100*time.Millisecond, "a replica without noloadbalance takes reads")

	tags := map[string]any{"noloadbalance": true, "nofailover": true, "zone": "b", "weight": 3}
	require.NoError(t, n2.SetPatroniTags(ctx, tags))
	// Seen by the other member too, from the DCS.
	m, err = patroniMember(ctx, n1.PatroniURL(), "n2")
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"noloadbalance": true, "nofailover": true, "zone": "b", "weight": float64(3)}, m["tags"])
	assert.Equal(t, http.StatusServiceUnavailable, patroniStatus(t, ctx, n2.PatroniURL(), "/replica"),
		"Patroni's own health check honours noloadbalance")

	require.NoError(t, n2.SetPatroniTags(ctx, map[string]any{"zone": "a"}), "tags are replaced, not merged")
	m, err = patroniMember(ctx, n1.PatroniURL(), "n2")
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"zone": "a"}, m["tags"])
	assert.Equal(t, http.StatusOK, patroniStatus(t, ctx, n2.PatroniURL(), "/replica"))

	// A stopped node gets its tags when it starts.
	require.NoError(t, n2.Stop())
	require.NoError(t, n2.SetPatroniTags(ctx, map[string]any{"noloadbalance": true}))
	require.NoError(t, n2.Start())
	require.NoError(t, c.Rejoin(ctx, n2))
	require.Eventually(t, func() bool {
		m, err := patroniMember(ctx, n1.PatroniURL(), "n2")
		return err == nil && reflect.DeepEqual(m["tags"], map[string]any{"noloadbalance": true})
	}, time.Minute, 50*time.Millisecond, "tags set while the node was down apply when it starts")
}

// A member added to a running Patroni cluster is bootstrapped by Patroni
// from the leader and streams; a member removed is gone from Patroni's view
// (and its slot from the leader); removing the leader hands its role over.
func TestPatroniAddRemoveNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1, SyncReplicas: 1, Backend: testcluster.BackendPatroni})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	_, err := connect(t, ctx, n1.DSN()).Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one')")
	require.NoError(t, err)

	n3, err := c.AddNode(ctx)
	require.NoError(t, err)
	assert.Equal(t, "n3", n3.Name())
	assert.Equal(t, []*testcluster.Node{n1, n2, n3}, c.Nodes())
	require.NotEmpty(t, n3.PatroniURL())
	assert.NotContains(t, []string{n1.PatroniURL(), n2.PatroniURL()}, n3.PatroniURL(), "its own REST API")
	m, err := patroniMember(ctx, n1.PatroniURL(), "n3")
	require.NoError(t, err, "the leader's API lists the new member")
	assert.Equal(t, "replica", m["role"])
	assert.Equal(t, fmt.Sprint(n3.Addr()), fmt.Sprintf("%v:%v", m["host"], m["port"]), "it advertises its proxy")
	assert.True(t, inRecovery(t, ctx, n3.DSN()))
	waitRow(t, ctx, n3.DSN(), 1)
	assert.Equal(t, map[string]string{"n2": "sync", "n3": "async"}, replication(t, ctx, n1))
	assert.Equal(t, n1, c.Master())

	t.Run("a replica removed", func(t *testing.T) {
		addr, api := n2.Addr(), n2.PatroniURL()
		require.NoError(t, c.RemoveNode(ctx, n2))
		assert.Equal(t, []*testcluster.Node{n1, n3}, c.Nodes())
		_, err := patroniMember(ctx, n1.PatroniURL(), "n2")
		assert.Error(t, err, "not a member any more")
		var slot int
		require.NoError(t, connect(t, ctx, n1.DSN()).QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'n2'").Scan(&slot))
		assert.Zero(t, slot, "the leader dropped its slot")
		for _, a := range []string{addr, strings.TrimPrefix(api, "http://")} {
			_, err = net.DialTimeout("tcp", a, time.Second)
			assert.ErrorIs(t, err, syscall.ECONNREFUSED, "nothing listens on %s", a)
		}
		require.Eventually(t, func() bool {
			st, err := streamingFrom(ctx, n1)
			return err == nil && reflect.DeepEqual(st, map[string]string{"n3": "sync"})
		}, time.Minute, 50*time.Millisecond, "Patroni makes n3 the synchronous standby")
		require.NoError(t, tryWrite(ctx, n1.DSN(), 2, "after removal"))
		waitRow(t, ctx, n3.DSN(), 2)
	})

	t.Run("a name is not reused; the leader removed hands over", func(t *testing.T) {
		n4, err := c.AddNode(ctx)
		require.NoError(t, err)
		assert.Equal(t, "n4", n4.Name())
		waitRow(t, ctx, n4.DSN(), 2)
		require.NoError(t, c.RemoveNode(ctx, n1))
		next := c.Master()
		assert.Contains(t, []*testcluster.Node{n3, n4}, next)
		require.NoError(t, tryWrite(ctx, next.DSN(), 3, "after the leader left"))
		assert.Equal(t, []*testcluster.Node{n3, n4}, c.Nodes())
	})
}
