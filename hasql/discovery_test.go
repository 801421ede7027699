//go:build linux

package hasql_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
	"github.com/pgxha/pgxha/testcluster/dnsmasq"
)

// setDiscoverer is a Discoverer whose sets the test hands it.
type setDiscoverer struct{ sets chan discovery.State }

func newSetDiscoverer(first ...discovery.Node) *setDiscoverer {
	d := &setDiscoverer{sets: make(chan discovery.State, 16)}
	d.sets <- discovery.State{Nodes: first}
	return d
}

func (d *setDiscoverer) Run(ctx context.Context, update func(discovery.State)) error {
	for {
		select {
		case st := <-d.sets:
			update(st)
		case <-ctx.Done():
			return nil
		}
	}
}

func (d *setDiscoverer) set(nodes ...discovery.Node) { d.sets <- discovery.State{Nodes: nodes} }

func addrsOf(m *hasql.Manager) []string {
	var out []string
	for _, st := range m.Nodes() {
		out = append(out, st.Addr)
	}
	return out
}

// workload writes and reads through m until stop is closed; it counts the
// operations and their errors.
type workload struct {
	ops, errs atomic.Int64
	wg        sync.WaitGroup
	stop      chan struct{}
	mu        sync.Mutex
	lastErr   error
}

// runWorkload starts 2 writers inserting into table and 2 readers through
// Replica(FallbackToMaster()).
func runWorkload(ctx context.Context, m *hasql.Manager, table string) *workload {
	w := &workload{stop: make(chan struct{})}
	for i := 0; i < 2; i++ {
		w.loop(ctx, 5*time.Millisecond, func(ctx context.Context) error {
			_, err := m.Master().Exec(ctx, "INSERT INTO "+table+" DEFAULT VALUES")
			return err
		})
		w.loop(ctx, 5*time.Millisecond, func(ctx context.Context) error {
			var k int
			return m.Replica(hasql.FallbackToMaster()).QueryRow(ctx, "SELECT 1").Scan(&k)
		})
	}
	return w
}

// runWorkloadReadOnly starts 4 readers through Replica().
func runWorkloadReadOnly(ctx context.Context, m *hasql.Manager) *workload {
	w := &workload{stop: make(chan struct{})}
	for i := 0; i < 4; i++ {
		w.loop(ctx, 2*time.Millisecond, func(ctx context.Context) error {
			var k int
			return m.Replica().QueryRow(ctx, "SELECT 1").Scan(&k)
		})
	}
	return w
}

// loop runs op every pause, each within 30s, until w ends or ctx does.
func (w *workload) loop(ctx context.Context, pause time.Duration, op func(context.Context) error) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for ctx.Err() == nil {
			select {
			case <-w.stop:
				return
			default:
			}
			opCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			w.count(op(opCtx))
			cancel()
			time.Sleep(pause)
		}
	}()
}

func (w *workload) count(err error) {
	w.ops.Add(1)
	if err != nil {
		w.errs.Add(1)
		w.mu.Lock()
		w.lastErr = err
		w.mu.Unlock()
	}
}

func (w *workload) end() { close(w.stop); w.wg.Wait() }

// The Manager follows a node set that changes while a workload runs: a node
// added gets a pool and a check and serves reads once checked; a node
// removed gets no new acquires and its pool closes; tags route reads.
func TestDiscoveryReconciles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	before := goleak.IgnoreCurrent()
	d := newSetDiscoverer(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr()})
	m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"), hasql.WithLogger(quiet), hasql.WithDiscoverer(d))
	require.NoError(t, err)
	require.Equal(t, []string{n1.Addr(), n2.Addr()}, addrsOf(m), "the discoverer's first set, not the DSN's three hosts")
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	_, err = m.Master().Exec(ctx, "CREATE TABLE disc (id bigserial PRIMARY KEY)")
	require.NoError(t, err)
	w := runWorkload(ctx, m, "disc")

	t.Run("a node added serves reads once checked", func(t *testing.T) {
		d.set(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr()}, discovery.Node{Addr: n3.Addr()})
		waitRole(t, m, "n3", hasql.RoleAsyncReplica)
		require.Equal(t, []string{n1.Addr(), n2.Addr(), n3.Addr()}, addrsOf(m))
		seen := map[string]bool{}
		for i := 0; i < 20; i++ {
			conn, err := m.AcquireReplica(ctx)
			require.NoError(t, err)
			seen[nodeOf(c, conn)] = true
			conn.Release()
		}
		assert.True(t, seen["n3"], "reads reach the new node: %v", seen)
	})

	t.Run("a node removed gets no acquire and its pool closes", func(t *testing.T) {
		d.set(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n3.Addr()})
		require.Eventually(t, func() bool { return len(m.Nodes()) == 2 }, 30*time.Second, 5*time.Millisecond)
		for i := 0; i < 20; i++ {
			conn, err := m.AcquireReplica(ctx)
			require.NoError(t, err)
			require.Equal(t, "n3", nodeOf(c, conn))
			conn.Release()
		}
		assert.Equal(t, []string{n1.Addr(), n3.Addr()}, addrsOf(m))
	})

	t.Run("tags route reads", func(t *testing.T) {
		d.set(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr(), Tags: map[string]string{"zone": "a", "dc": "x"}},
			discovery.Node{Addr: n3.Addr(), Tags: map[string]string{"zone": "b", "noloadbalance": "false"}})
		waitRole(t, m, "n2", hasql.RoleSyncReplica)
		for i := 0; i < 10; i++ {
			conn, err := m.AcquireReplica(ctx, hasql.PreferZone("b"))
			require.NoError(t, err)
			assert.Equal(t, "n3", nodeOf(c, conn), "the caller's zone first")
			conn.Release()
			conn, err = m.AcquireReplica(ctx, hasql.WithTag("dc", "x"))
			require.NoError(t, err)
			assert.Equal(t, "n2", nodeOf(c, conn), "a user tag matched")
			conn.Release()
		}
		d.set(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr(), Tags: map[string]string{"zone": "a"}},
			discovery.Node{Addr: n3.Addr(), Tags: map[string]string{"zone": "b", "noloadbalance": "true"}})
		require.Eventually(t, func() bool {
			for i := 0; i < 10; i++ {
				conn, err := m.AcquireReplica(ctx, hasql.PreferZone("b"))
				if err != nil {
					return false
				}
				name := nodeOf(c, conn)
				conn.Release()
				if name != "n2" {
					return false
				}
			}
			return true
		}, 30*time.Second, 10*time.Millisecond, "noloadbalance keeps n3 out of reads; its zone falls back to the others")
		assert.Equal(t, hasql.RoleAsyncReplica, roles(m)["n3"], "still a replica (and a failover candidate)")
	})

	w.end()
	assert.Zero(t, w.errs.Load(), "no operation failed while the set changed (%d ops); last error: %v", w.ops.Load(), w.lastErr)
	m.Close()
	goleak.VerifyNone(t, append(ignoreProxies, before)...)
}

// loopbackPort finds a port free on each of the given loopback addresses.
func loopbackPort(t *testing.T, ips ...string) int {
	t.Helper()
	for try := 0; try < 20; try++ {
		l, err := net.Listen("tcp", ips[0]+":0")
		require.NoError(t, err)
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		ok := true
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no port free on every loopback address")
	return 0
}

// A DNS name whose A records are the nodes (a Kubernetes headless service):
// records added and removed while a workload runs, then a failover to the
// node that joined last. Against a real DNS server (dnsmasq).
func TestDiscoveryDNS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	srv := dnsmasq.New(t, dnsmasq.Options{})
	ips := []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}
	port := loopbackPort(t, ips...)
	for i, n := range c.Nodes() {
		_, err := n.AliasAt(net.JoinHostPort(ips[i], strconv.Itoa(port)))
		require.NoError(t, err)
	}
	name := srv.Name("db")
	require.NoError(t, srv.SetHost(ctx, name, ips[0], ips[1]))
	d, err := discovery.NewDNS(discovery.DNSConfig{Name: name, Port: uint16(port), Interval: 100 * time.Millisecond,
		MinInterval: 10 * time.Millisecond, Timeout: 2 * time.Second, Resolver: srv.Resolver()})
	require.NoError(t, err)
	dsn := fmt.Sprintf("postgres://postgres:pgxha@%s:%d/postgres?sslmode=disable&hasql_check_interval=100ms", name, port)
	before := goleak.IgnoreCurrent()
	m, err := hasql.New(ctx, dsn, hasql.WithLogger(quiet), hasql.WithDiscoverer(d))
	require.NoError(t, err)
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	require.Equal(t, []string{ips[0] + ":" + strconv.Itoa(port), ips[1] + ":" + strconv.Itoa(port)}, addrsOf(m))
	_, err = m.Master().Exec(ctx, "CREATE TABLE dns (id bigserial PRIMARY KEY)")
	require.NoError(t, err)
	w := runWorkload(ctx, m, "dns")

	require.NoError(t, srv.SetHost(ctx, name, ips...))
	require.Eventually(t, func() bool { return len(m.Nodes()) == 3 && m.Nodes()[2].Role == hasql.RoleAsyncReplica },
		30*time.Second, 5*time.Millisecond, "the third address joins: %v", m.Nodes())
	require.NoError(t, srv.SetHost(ctx, name, ips[0], ips[2]))
	require.Eventually(t, func() bool { return len(m.Nodes()) == 2 }, 30*time.Second, 5*time.Millisecond, "the second leaves")

	// Failover to the node that joined last, across the changed set.
	n3 := c.Nodes()[2]
	require.NoError(t, c.Nodes()[0].Kill())
	require.NoError(t, c.Failover(ctx, n3))
	require.Eventually(t, func() bool { return m.Stat().Master == ips[2]+":"+strconv.Itoa(port) }, 30*time.Second, 5*time.Millisecond)
	var tl int
	require.NoError(t, m.Master().QueryRow(ctx, timelineSQL).Scan(&tl))
	assert.Equal(t, 2, tl, "writes go to the new master")
	w.end()
	t.Logf("%d operations, %d errors (those in flight at the crash); last: %v", w.ops.Load(), w.errs.Load(), w.lastErr)
	assert.Less(t, w.errs.Load(), int64(10))
	st := m.Stat().Discovery
	assert.Contains(t, st.Source, name)
	assert.NoError(t, st.Err)

	// The DNS server goes away: the last good set stays, and Stat says why.
	require.NoError(t, srv.Stop())
	d.Refresh()
	require.Eventually(t, func() bool { return m.Stat().Discovery.Err != nil }, 30*time.Second, 10*time.Millisecond)
	assert.Len(t, m.Nodes(), 2, "the last good set stays")
	m.Close()
	goleak.VerifyNone(t, append(append(ignoreProxies, ignoreRejoined...), before)...)
}

// A churn of nodes (one added and one removed every half second) leaks no
// goroutine, connection or pool. Thirty seconds by default; PGXHA_SOAK=1
// makes it five minutes.
func TestDiscoveryChurnLeaksNothing(t *testing.T) {
	const step = 500 * time.Millisecond
	churn := 30 * time.Second
	if os.Getenv("PGXHA_SOAK") != "" {
		churn = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), churn+3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	var aliases []string
	for i := 0; i < 4; i++ {
		a, err := n2.Alias()
		require.NoError(t, err)
		aliases = append(aliases, a)
	}
	before := goleak.IgnoreCurrent()
	d := newSetDiscoverer(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr()})
	m, err := hasql.New(ctx, withParams(c.DSN(), "application_name", "churn", "hasql_check_interval", "100ms"),
		hasql.WithLogger(quiet), hasql.WithDiscoverer(d))
	require.NoError(t, err)
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	w := runWorkloadReadOnly(ctx, m)

	// The set is the master, the replica and a window of two aliases that
	// slides by one every step: one added, one removed.
	rounds := int(churn / step)
	for i := 0; i < rounds; i++ {
		a, b := aliases[i%len(aliases)], aliases[(i+1)%len(aliases)]
		d.set(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr()}, discovery.Node{Addr: a}, discovery.Node{Addr: b})
		time.Sleep(step)
	}
	w.end()
	assert.Zero(t, w.errs.Load(), "reads never failed through the churn (%d); last: %v", w.ops.Load(), w.lastErr)
	require.Len(t, m.Nodes(), 4)

	mc, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer mc.Close(ctx)
	rc, err := n2.Conn(ctx)
	require.NoError(t, err)
	defer rc.Close(ctx)
	backends := func() int {
		var a, b int
		require.NoError(t, mc.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('churn', 'pgxha-check')").Scan(&a))
		require.NoError(t, rc.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('churn', 'pgxha-check')").Scan(&b))
		return a + b
	}
	// Four nodes: at most a check connection and the pool's connections
	// (min idle 1, the workload's few) each; nothing of the nodes removed.
	require.Eventually(t, func() bool { return backends() <= 4*(1+4) }, 30*time.Second, 100*time.Millisecond,
		"connections of removed nodes are closed: %d backends", backends())
	m.Close()
	goleak.VerifyNone(t, append(append(ignoreProxies, ignoreRejoined...), before)...)
	require.Eventually(t, func() bool { return backends() == 0 }, 30*time.Second, 100*time.Millisecond)
}

// SRV records (target and port each) are the nodes: records added and
// removed while a workload runs, then a failover across the changed set.
// Against a real DNS server (dnsmasq).
func TestDiscoverySRV(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	srv := dnsmasq.New(t, dnsmasq.Options{})
	target := srv.Name("pg")
	require.NoError(t, srv.SetHost(ctx, target, "127.0.0.1"))
	record := func(n *testcluster.Node) dnsmasq.SRV {
		p, err := strconv.Atoi(portStr(n.Addr()))
		require.NoError(t, err)
		return dnsmasq.SRV{Target: target, Port: uint16(p)}
	}
	name := srv.Name("_postgresql._tcp.db")
	require.NoError(t, srv.SetSRV(ctx, name, record(n1), record(n2)))
	d, err := discovery.NewSRV(discovery.SRVConfig{Name: name, Interval: 100 * time.Millisecond,
		MinInterval: 10 * time.Millisecond, Timeout: 2 * time.Second, Resolver: srv.Resolver()})
	require.NoError(t, err)
	before := goleak.IgnoreCurrent()
	m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"), hasql.WithLogger(quiet), hasql.WithDiscoverer(d))
	require.NoError(t, err)
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	require.Len(t, m.Nodes(), 2, "the SRV records' nodes, not the DSN's three hosts")
	_, err = m.Master().Exec(ctx, "CREATE TABLE srv (id bigserial PRIMARY KEY)")
	require.NoError(t, err)
	w := runWorkload(ctx, m, "srv")

	require.NoError(t, srv.SetSRV(ctx, name, record(n1), record(n2), record(n3)))
	require.Eventually(t, func() bool { return len(m.Nodes()) == 3 && roles(m)["n3"] == hasql.RoleAsyncReplica },
		30*time.Second, 5*time.Millisecond, "n3's record joins: %v", m.Nodes())
	require.NoError(t, srv.SetSRV(ctx, name, record(n1), record(n3)))
	require.Eventually(t, func() bool { return len(m.Nodes()) == 2 }, 30*time.Second, 5*time.Millisecond, "n2's record leaves")
	for _, st := range m.Nodes() {
		assert.NotEqual(t, "n2", st.Name)
		assert.NotEmpty(t, st.Tags[discovery.TagSRVPriority], "the record's priority is a tag")
	}

	require.NoError(t, n1.Kill())
	require.NoError(t, c.Failover(ctx, n3))
	waitRole(t, m, "n3", hasql.RoleMaster)
	var tl int
	require.NoError(t, m.Master().QueryRow(ctx, timelineSQL).Scan(&tl))
	assert.Equal(t, 2, tl)
	w.end()
	t.Logf("%d operations, %d errors (those in flight at the crash); last: %v", w.ops.Load(), w.errs.Load(), w.lastErr)
	assert.Less(t, w.errs.Load(), int64(10))
	m.Close()
	// SetSRV restarts dnsmasq: its process's waiter is the test's, not the Manager's.
	goleak.VerifyNone(t, append(append(ignoreProxies, ignoreRejoined...), before, goleak.IgnoreAnyFunction("github.com/pgxha/pgxha/testcluster/dnsmasq.(*Server).startLocked.func1"))...)
}
