//go:build linux

package hasql_test

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgxha/pgxha/balancer"
	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// ctxDiscoverer is a setDiscoverer that keeps the context it runs with (the
// Manager's own), so that a test can wait for the Manager's Close to have
// begun.
type ctxDiscoverer struct {
	*setDiscoverer
	mu  sync.Mutex
	ctx context.Context
}

func (d *ctxDiscoverer) Run(ctx context.Context, update func(discovery.State)) error {
	d.mu.Lock()
	d.ctx = ctx
	d.mu.Unlock()
	return d.setDiscoverer.Run(ctx, update)
}

func (d *ctxDiscoverer) done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ctx.Done()
}

// waitersInPools counts the goroutines blocked in a pool's acquire, waiting
// for one of its connections to be released.
func waitersInPools() int {
	buf := make([]byte, 1<<22)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "semaphore.(*Weighted).Acquire(")
}

// Close while the Manager adds discovered nodes leaves none of their pools
// behind: no goroutine (a pool's health check) and no connection.
func TestCloseDuringReconcileLeaksNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	before := goleak.IgnoreCurrent()

	d := &ctxDiscoverer{setDiscoverer: newSetDiscoverer(discovery.Node{Addr: n1.Addr()})}
	var m *hasql.Manager
	var armed atomic.Bool
	closed := make(chan struct{})
	// While n2 is being added, Close begins: the reconcile goes on with the
	// Manager's context cancelled.
	hook := func(nc hasql.NodeConfig, _ *pgxpool.Config) error {
		if armed.Load() && nc.Addr == n2.Addr() {
			go func() { m.Close(); close(closed) }()
			<-d.done()
		}
		return nil
	}
	m, err := hasql.New(ctx, withParams(c.DSN(), "application_name", "reconcile-close"),
		hasql.WithLogger(quiet), hasql.WithDiscoverer(d), hasql.WithConfigureNode(hook))
	require.NoError(t, err)
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	armed.Store(true)
	d.set(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr()}, discovery.Node{Addr: n3.Addr()})
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("Close did not return")
	}
	goleak.VerifyNone(t, append(ignoreProxies, before)...)

	conn, err := n2.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	backends := func() int {
		var k int
		require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'reconcile-close'").Scan(&k))
		return k
	}
	require.Eventually(t, func() bool { return backends() == 0 }, 30*time.Second, 50*time.Millisecond,
		"the pool made for n2 during Close keeps %d connections", backends())
}

// A discovered set none of whose members can be a node (no port, a port
// of 0, refused by ConfigureNode) leaves the node set as it was: the error
// is reported in Stat().Discovery and logged, and DB, acquires and Stat go
// on with the last good set.
func TestDiscoveryNeverEmptiesTheSet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	const refused = "127.0.0.1:1"
	hook := func(nc hasql.NodeConfig, _ *pgxpool.Config) error {
		if nc.Addr == refused {
			return assert.AnError
		}
		return nil
	}
	logs := &syncBuffer{}
	d := newSetDiscoverer(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr()})
	m := newManager(t, ctx, c.DSN(), hasql.WithDiscoverer(d), hasql.WithConfigureNode(hook),
		hasql.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	want := []string{n1.Addr(), n2.Addr()}
	require.Equal(t, want, addrsOf(m))

	d.set(discovery.Node{Addr: "db-without-port"}, discovery.Node{Addr: "127.0.0.1:0"}, discovery.Node{Addr: refused})
	require.Eventually(t, func() bool { return m.Stat().Discovery.Err != nil || len(m.Nodes()) != 2 },
		30*time.Second, 10*time.Millisecond, "the set was taken or refused")
	assert.Equal(t, want, addrsOf(m), "the last good set is kept")
	st := m.Stat().Discovery
	if assert.Error(t, st.Err, "Stat reports the set refused") {
		assert.Contains(t, st.Err.Error(), "db-without-port")
		assert.Contains(t, st.Err.Error(), refused)
	}
	assert.Equal(t, 2, st.Nodes, "Stat counts the nodes in use")
	assert.Contains(t, logs.String(), "db-without-port", "the refusal is logged")

	assert.NotPanics(t, func() {
		db := m.DB(hasql.TargetMaster)
		defer db.Close()
		assert.NoError(t, db.PingContext(ctx))
	})
	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	conn, err := m.AcquireReplica(actx)
	acancel()
	require.NoError(t, err)
	assert.Equal(t, "n2", nodeOf(c, conn))
	conn.Release()

	// A good set again is taken, and clears the error.
	d.set(discovery.Node{Addr: n1.Addr()})
	// The set is taken, then the error cleared: wait for both.
	require.Eventually(t, func() bool { return len(m.Nodes()) == 1 && m.Stat().Discovery.Err == nil }, 30*time.Second, 10*time.Millisecond)
	assert.Equal(t, []string{n1.Addr()}, addrsOf(m))
	assert.NoError(t, m.Stat().Discovery.Err)
	assert.Equal(t, 1, m.Stat().Discovery.Nodes)
}

// An acquire waiting inside the pool of a node that leaves the set (its
// connections all held) returns at once with a connection to a node of the
// current set, without waiting for the held connection.
func TestRemovedNodeReleasesWaiters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	d := newSetDiscoverer(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr()}, discovery.Node{Addr: n3.Addr()})
	m := newManager(t, ctx, withParams(c.DSN(), "pool_max_conns", "1"),
		hasql.WithDiscoverer(d), hasql.WithBalancer(balancer.First()))
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	held, err := m.AcquireReplica(ctx)
	require.NoError(t, err)
	defer held.Release()
	require.Equal(t, "n2", nodeOf(c, held), "First picks n2, the first replica of the set")

	type result struct {
		node string
		err  error
	}
	waiters := 3
	results := make(chan result, waiters)
	for range waiters {
		go func() {
			conn, err := m.AcquireReplica(ctx)
			if err != nil {
				results <- result{err: err}
				return
			}
			name := nodeOf(c, conn)
			conn.Release()
			results <- result{node: name}
		}()
	}
	require.Eventually(t, func() bool { return waitersInPools() == waiters }, 30*time.Second, 5*time.Millisecond,
		"the acquires wait in n2's pool")

	d.set(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n3.Addr()})
	for range waiters {
		select {
		case r := <-results:
			require.NoError(t, r.err)
			assert.Equal(t, "n3", r.node, "picked again from the current set")
		case <-time.After(30 * time.Second):
			t.Fatal("an acquire still waits in the pool of the node removed")
		}
	}
}

// A DB connection being opened to a node that leaves the set (it does not
// answer) is given up at once, and opened on a node of the current set.
func TestRemovedNodeReleasesDBConnects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	d := newSetDiscoverer(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr()}, discovery.Node{Addr: n3.Addr()})
	// Long checks: n2 paused stays a replica in the view while the test runs.
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_timeout", "2m", "hasql_watch_promotion", "false"),
		hasql.WithDiscoverer(d), hasql.WithBalancer(balancer.First()))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	db := m.DB(hasql.TargetReplica)
	defer db.Close()

	require.NoError(t, n2.Pause())
	defer func() { require.NoError(t, n2.Resume()) }()
	type result struct {
		port int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		var port int
		err := db.QueryRowContext(ctx, "SELECT current_setting('port')::int").Scan(&port)
		res <- result{port, err}
	}()
	// The connect to n2 hangs: n2 is paused.
	require.Eventually(t, func() bool { return db.Stats().OpenConnections == 1 }, 30*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		buf := make([]byte, 1<<22)
		return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "pgconn.connectOne")
	}, 30*time.Second, 5*time.Millisecond, "a connect is in flight")

	d.set(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n3.Addr()})
	select {
	case r := <-res:
		require.NoError(t, r.err)
		direct, err := n3.Conn(ctx)
		require.NoError(t, err)
		var want int
		require.NoError(t, direct.QueryRow(ctx, "SELECT current_setting('port')::int").Scan(&want))
		direct.Close(ctx)
		assert.Equal(t, want, r.port, "served by n3")
	case <-time.After(30 * time.Second):
		t.Fatal("the connect to the node removed still hangs")
	}
}

// WithNodeWeight and WithReplicaName apply to discovered nodes, to those
// the connection string names and to those it does not.
func TestDiscoveredNodesKeepTheirOptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	var mu sync.Mutex
	made := map[string]hasql.NodeConfig{}
	hook := func(nc hasql.NodeConfig, _ *pgxpool.Config) error {
		mu.Lock()
		made[nc.Addr] = nc
		mu.Unlock()
		return nil
	}
	made1 := func(addr string) hasql.NodeConfig {
		mu.Lock()
		defer mu.Unlock()
		return made[addr]
	}

	// n3 is not in the connection string: without a discoverer, naming it
	// is an error.
	dsn := withHosts(t, c.DSN(), n1.Addr(), n2.Addr())
	_, err := hasql.New(ctx, dsn, hasql.WithLogger(quiet), hasql.WithNodeWeight(n3.Addr(), 2))
	require.ErrorContains(t, err, n3.Addr())

	d := newSetDiscoverer(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr()})
	m := newManager(t, ctx, dsn, hasql.WithDiscoverer(d), hasql.WithConfigureNode(hook),
		hasql.WithNodeWeight(n2.Addr(), 3), hasql.WithReplicaName(n2.Addr(), "custom2"),
		hasql.WithNodeWeight(n3.Addr(), 0.5), hasql.WithReplicaName(n3.Addr(), "custom3"))
	// Named so, n2 is not found in the master's pg_stat_replication: it
	// counts as detached, not as a replica.
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	assert.Equal(t, 1.0, made1(n1.Addr()).Weight)
	assert.Equal(t, 3.0, made1(n2.Addr()).Weight)
	assert.Equal(t, "custom2", made1(n2.Addr()).Name)

	d.set(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr()}, discovery.Node{Addr: n3.Addr(), Name: "from-discovery"})
	require.Eventually(t, func() bool { return len(m.Nodes()) == 3 }, 30*time.Second, 10*time.Millisecond)
	assert.Equal(t, 0.5, made1(n3.Addr()).Weight)
	assert.Equal(t, "custom3", made1(n3.Addr()).Name, "the user's name wins over the discoverer's")
	names := map[string]string{}
	for _, st := range m.Nodes() {
		names[st.Addr] = st.Name
	}
	assert.Equal(t, "custom2", names[n2.Addr()])
	assert.Equal(t, "custom3", names[n3.Addr()])
}
