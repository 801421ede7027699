package hasql_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// connectGate holds the first pool connection made once armed (to addr
// only, when addr is set) at BeforeConnect, before it dials, until
// release is closed; then lets it on, or fails it with err.
type connectGate struct {
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
	addr    string
	err     error
}

func newConnectGate(addr string, err error) *connectGate {
	return &connectGate{entered: make(chan struct{}), release: make(chan struct{}), addr: addr, err: err}
}

func (g *connectGate) beforeConnect(ctx context.Context, cc *pgx.ConnConfig) error {
	if g.addr != "" && net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))) != g.addr || !g.armed.CompareAndSwap(true, false) {
		return nil
	}
	close(g.entered)
	select {
	case <-g.release:
		return g.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// gatedManager makes a Manager of c whose pools' connections pass g, with
// the check interval and timeout given, and waits for it to be ready with
// replicas replicas.
func gatedManager(ctx context.Context, t *testing.T, c *testcluster.Cluster, g *connectGate, interval, timeout time.Duration, replicas int) *hasql.Manager {
	t.Helper()
	cfg, err := hasql.ParseConfig(withParams(c.DSN(), "hasql_check_interval", interval.String(),
		"hasql_check_timeout", timeout.String(), "pool_min_conns", "0", "pool_max_conns", "4"))
	require.NoError(t, err)
	cfg.Logger = quiet
	cfg.PoolConfig.BeforeConnect = g.beforeConnect
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, replicas))
	return m
}

// TestAcquireWaitsForTheNextMasterAfterTheMastersPoolFailed: an acquire
// picks the master, whose server then stops (a switchover's shutdown:
// Patroni's old leader refuses connections while it writes its shutdown
// checkpoint); its new connection fails, and by then the checks have found
// the master down and no node is master. The acquire must wait for the next
// master, as an acquire that found none does, not fail a check timeout
// later: the failure belongs to a view that is gone. (It used to give up
// when no other view came within the check timeout, so a promotion slower
// than that failed writes that were not in flight.) The next master is the
// same server started again: the only node, whose checks change nothing
// while it is down.
func TestAcquireWaitsForTheNextMasterAfterTheMastersPoolFailed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]
	const checkTimeout = 300 * time.Millisecond

	// The first pool connection made once armed waits at the gate, before
	// it dials: the acquire has picked the master by then.
	g := newConnectGate("", nil)
	m := gatedManager(ctx, t, c, g, 5*time.Second, checkTimeout, 0)
	require.Equal(t, n1.Addr(), m.Stat().Master)

	// Hold the pool's connection: the next acquire makes one.
	held, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	defer held.Release()

	g.armed.Store(true)
	type result struct {
		who string
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		conn, err := m.AcquireMaster(ctx)
		if err != nil {
			r.err = err
		} else {
			r.err = conn.QueryRow(ctx, "SELECT current_setting('cluster_name')").Scan(&r.who)
			conn.Release()
		}
		done <- r
	}()
	select {
	case <-g.entered:
	case r := <-done:
		t.Fatalf("the acquire ended before it made a connection: who=%q err=%v", r.who, r.err)
	}
	require.NoError(t, n1.Stop())
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, time.Minute, 5*time.Millisecond,
		"the checks find the master down: %v", m.Nodes())
	close(g.release) // the connection is refused

	// A master back later than the check timeout.
	select {
	case r := <-done:
		t.Fatalf("the acquire ended while no node was master: who=%q err=%v", r.who, r.err)
	case <-time.After(3 * checkTimeout):
	}
	require.NoError(t, n1.Start())
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatalf("the acquire still waits a minute after the master came back: %v", m.Nodes())
	}
	require.NoError(t, r.err, "the acquire waits for the next master: %v", m.Nodes())
	require.Equal(t, "n1", r.who)
}

// TestMinLSNFallbackAsksTheReplicasWhenTheMasterIsGone: a read with
// MinLSN and FallbackToMaster finds the replica behind (its replay paused)
// and, past MinLSNWait, falls back to the master, whose server then stops:
// its new connection is refused, and the checks find no master. The
// replica then replays the position: the read must be served there, as a
// MinLSN read asks the replicas on while there is no master, not wait for a
// master (nor fail a check timeout later, as it used to).
func TestMinLSNFallbackAsksTheReplicasWhenTheMasterIsGone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	const checkTimeout = 300 * time.Millisecond

	// The first connection to n1 made once armed waits at the gate, before
	// it dials: the read has fallen back to the master by then.
	g := newConnectGate(n1.Addr(), nil)
	m := gatedManager(ctx, t, c, g, 5*time.Second, checkTimeout, 1)

	require.NoError(t, n2.PauseReplay(ctx))
	_, err := m.Master().Exec(ctx, "CREATE TABLE fallback (id int)")
	require.NoError(t, err)
	lsn, err := m.CurrentLSN(ctx)
	require.NoError(t, err)
	// Hold the master pool's connection: the fallback makes one.
	held, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	defer held.Release()

	g.armed.Store(true)
	type result struct {
		who string
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		conn, err := m.AcquireReplica(ctx, hasql.MinLSN(lsn), hasql.MinLSNWait(50*time.Millisecond), hasql.FallbackToMaster())
		if err != nil {
			r.err = err
		} else {
			r.err = conn.QueryRow(ctx, "SELECT current_setting('cluster_name')").Scan(&r.who)
			conn.Release()
		}
		done <- r
	}()
	select {
	case <-g.entered:
	case r := <-done:
		t.Fatalf("the read ended before it fell back to the master: who=%q err=%v", r.who, r.err)
	}
	require.NoError(t, n1.Stop())
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, time.Minute, 5*time.Millisecond,
		"the checks find the master down: %v", m.Nodes())
	close(g.release) // the connection is refused
	// Later than the check timeout, the replica replays the position.
	select {
	case r := <-done:
		t.Fatalf("the read ended while the replica could still replay the position: who=%q err=%v", r.who, r.err)
	case <-time.After(3 * checkTimeout):
	}
	require.NoError(t, n2.ResumeReplay(ctx))
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatalf("the read still waits a minute after the replica resumed replay: %v", m.Nodes())
	}
	require.NoError(t, r.err, "the read is served by the replica: %v", m.Nodes())
	require.Equal(t, "n2", r.who)
}

// TestAcquirePicksAgainWhenTheViewChangedUnderAFailedConnect: an acquire
// picks the master and its new connection is delayed; meanwhile the server
// stops and starts again, and the checks find it down and then master
// again. The connection then fails (made while the server was down). The
// failure belongs to a view that is gone: the acquire picks again from the
// new one and gets the master, instead of waiting a check timeout for yet
// another view and failing (the view no longer changes: it has its master).
func TestAcquirePicksAgainWhenTheViewChangedUnderAFailedConnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]

	g := newConnectGate("", errors.New("connect failed while the server was down"))
	m := gatedManager(ctx, t, c, g, 100*time.Millisecond, 300*time.Millisecond, 0)
	held, err := m.AcquireMaster(ctx)
	require.NoError(t, err)

	g.armed.Store(true)
	done := make(chan error, 1)
	go func() {
		conn, err := m.AcquireMaster(ctx)
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT 1")
			conn.Release()
		}
		done <- err
	}()
	select {
	case <-g.entered:
	case err := <-done:
		t.Fatalf("the acquire ended before it made a connection: %v", err)
	}
	held.Release()
	require.NoError(t, n1.Stop())
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, time.Minute, 5*time.Millisecond,
		"the checks find the master down: %v", m.Nodes())
	require.NoError(t, n1.Start())
	require.Eventually(t, func() bool { return m.Stat().Master == n1.Addr() }, time.Minute, 5*time.Millisecond,
		"the checks find the master back: %v", m.Nodes())
	close(g.release) // the connection made across the change fails
	select {
	case err := <-done:
		require.NoError(t, err, "the acquire picks again from the new view: %v", m.Nodes())
	case <-time.After(time.Minute):
		t.Fatalf("the acquire still waits a minute after the master came back: %v", m.Nodes())
	}
}

// TestListenWaitsForTheNextMasterAfterItsConnectFailed: Listen picks the
// master, whose server then stops; its connection is refused, and the
// checks find no master. Listen must wait for the next master, as it does
// when it finds none, and listen there: it used to return the refusal at
// once.
func TestListenWaitsForTheNextMasterAfterItsConnectFailed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]
	const checkTimeout = 300 * time.Millisecond

	g := newConnectGate("", nil)
	m := gatedManager(ctx, t, c, g, 5*time.Second, checkTimeout, 0)

	g.armed.Store(true)
	type result struct {
		l   *hasql.Listener
		err error
	}
	done := make(chan result, 1)
	go func() {
		l, err := m.Listen(ctx, "events")
		done <- result{l, err}
	}()
	select {
	case <-g.entered:
	case r := <-done:
		t.Fatalf("Listen ended before it connected: %v", r.err)
	}
	require.NoError(t, n1.Stop())
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, time.Minute, 5*time.Millisecond,
		"the checks find the master down: %v", m.Nodes())
	close(g.release) // the connection is refused
	select {
	case r := <-done:
		t.Fatalf("Listen ended while no node was master: %v", r.err)
	case <-time.After(3 * checkTimeout):
	}
	require.NoError(t, n1.Start())
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatalf("Listen still waits a minute after the master came back: %v", m.Nodes())
	}
	require.NoError(t, r.err, "Listen waits for the next master: %v", m.Nodes())
	defer r.l.Close()
	_, err := m.Master().Exec(ctx, "NOTIFY events, 'hello'")
	require.NoError(t, err)
	rctx, rcancel := context.WithTimeout(ctx, time.Minute)
	defer rcancel()
	got, err := r.l.Receive(rctx)
	require.NoError(t, err)
	require.Equal(t, "hello", got.Payload)
}
