//go:build linux

package hasql_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// stacks returns every goroutine's stack.
func stacks() string {
	buf := make([]byte, 1<<22)
	return string(buf[:runtime.Stack(buf, true)])
}

// waitStack waits until some goroutine's stack holds every one of frames.
func waitStack(t *testing.T, d time.Duration, frames ...string) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, g := range strings.Split(stacks(), "\n\n") {
			all := true
			for _, f := range frames {
				all = all && strings.Contains(g, f)
			}
			if all {
				return true
			}
		}
		return false
	}, d, 5*time.Millisecond, "no goroutine in %v", frames)
}

// closeWithin runs m.Close and returns how long it took, failing the test
// when it has not returned after limit.
func closeWithin(t *testing.T, m *hasql.Manager, limit time.Duration) time.Duration {
	t.Helper()
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		m.Close()
		done <- time.Since(start)
	}()
	select {
	case d := <-done:
		return d
	case <-time.After(limit):
		t.Fatalf("Close has not returned after %s", limit)
		return 0
	}
}

// TestCloseCutsConnectsToAHungNode: Close with a node that hangs
// (SIGSTOP), while its pool makes the connection MinIdleConns (1 by
// default) asks for. The pool's background connect runs on a context of
// its own, bounded only by connect_timeout (= hasql_acquire_timeout, 30s
// by default), and pgxpool's Close waited for it (29 s). Connections being
// made are now cut when the node closes.
func TestCloseCutsConnectsToAHungNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n2 := c.Nodes()[1]
	require.NoError(t, n2.Pause())
	defer func() { require.NoError(t, n2.Resume()) }()

	m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_timeout", "1s"), hasql.WithLogger(quiet))
	require.NoError(t, err)
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	// The pool of n2 connects in the background for its idle connection.
	waitStack(t, 30*time.Second, "pgxpool.(*Pool).createIdleResources", "pgconn.connectOne")

	took := closeWithin(t, m, 2*time.Minute)
	t.Logf("Close took %s", took)
	assert.Less(t, took, 10*time.Second,
		"Close waited for the pool's background connect to the hung node (connect_timeout = hasql_acquire_timeout)")
}

// TestCloseCutsConnectsOfARemovedHungNode: the same through discovery: a
// hung node removed from the set is drained (its pool closed), which
// waited for the pool's background connect, and Close waited for the drain
// (30 s).
func TestCloseCutsConnectsOfARemovedHungNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	d := newSetDiscoverer(discovery.Node{Addr: n1.Addr()})
	m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_timeout", "1s"),
		hasql.WithLogger(quiet), hasql.WithDiscoverer(d))
	require.NoError(t, err)
	require.NoError(t, m.WaitReady(ctx, 1, 0))

	require.NoError(t, n2.Pause())
	defer func() { require.NoError(t, n2.Resume()) }()
	d.set(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr()})
	require.Eventually(t, func() bool { return len(m.Nodes()) == 2 }, 30*time.Second, 10*time.Millisecond)
	waitStack(t, 30*time.Second, "pgxpool.(*Pool).createIdleResources", "pgconn.connectOne")
	d.set(discovery.Node{Addr: n1.Addr()})
	require.Eventually(t, func() bool { return len(m.Nodes()) == 1 }, 30*time.Second, 10*time.Millisecond)

	took := closeWithin(t, m, 2*time.Minute)
	t.Logf("Close took %s", took)
	assert.Less(t, took, 10*time.Second,
		"Close waited for the drain of the removed hung node's pool (its background connect)")
}

// TestCloseEndsListenConnect: Close while Listen connects to a master that
// hangs: Close returned, but the Listen went on connecting (its connect was
// bound by the caller's context and connect_timeout only, not by Close)
// instead of returning ErrClosed.
func TestCloseEndsListenConnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1 := c.Nodes()[0]
	// Long checks: the paused master stays the master in the view while
	// Listen picks it.
	m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_timeout", "5s", "hasql_watch_promotion", "false",
		"hasql_acquire_timeout", "2m"), hasql.WithLogger(quiet))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	require.NoError(t, n1.Pause())
	defer func() { require.NoError(t, n1.Resume()) }()
	type result struct {
		err error
		at  time.Time
	}
	res := make(chan result, 1)
	go func() {
		l, err := m.Listen(ctx, "ch")
		if l != nil {
			l.Close()
		}
		res <- result{err, time.Now()}
	}()
	waitStack(t, 30*time.Second, "hasql.(*Listener).connect", "pgconn.connectOne")

	took := closeWithin(t, m, time.Minute)
	closedAt := time.Now()
	t.Logf("Close took %s", took)
	select {
	case r := <-res:
		t.Logf("Listen returned %s after Close: %v", r.at.Sub(closedAt), r.err)
		assert.ErrorIs(t, r.err, hasql.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("Listen still connects 10s after Close returned")
	}
}

// TestListenAfterCloseIsClosed: Close while Listen connects to a slow
// master: Close returned first, then Listen finished its connect, issued
// LISTEN and returned a Listener with no error: a connection to the
// cluster opened, and a goroutine of the Manager started, after Close
// returned.
func TestListenAfterCloseIsClosed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1 := c.Nodes()[0]
	m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_timeout", "10s", "hasql_watch_promotion", "false"),
		hasql.WithLogger(quiet))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	require.NoError(t, n1.SetLatency(400*time.Millisecond))
	defer func() { require.NoError(t, n1.SetLatency(0)) }()
	type result struct {
		l   *hasql.Listener
		err error
		at  time.Time
	}
	res := make(chan result, 1)
	go func() {
		l, err := m.Listen(ctx, "ch")
		res <- result{l, err, time.Now()}
	}()
	waitStack(t, 30*time.Second, "hasql.(*Listener).connect")

	closeWithin(t, m, time.Minute)
	closedAt := time.Now()
	var r result
	select {
	case r = <-res:
	case <-time.After(time.Minute):
		t.Fatal("Listen has not returned")
	}
	if r.l != nil {
		r.l.Close()
	}
	t.Logf("Listen returned %s after Close returned: %v", r.at.Sub(closedAt), r.err)
	if r.err == nil {
		// Listen returned before Close did: the Listener it returned
		// is closed with the Manager.
		require.True(t, r.at.Before(closedAt), "Listen returned a Listener %s after Close returned", r.at.Sub(closedAt))
		_, rerr := r.l.Receive(ctx)
		assert.ErrorIs(t, rerr, hasql.ErrClosed)
		return
	}
	assert.ErrorIs(t, r.err, hasql.ErrClosed, "a Listen that ends after Close returns ErrClosed")
}

// TestListenWithoutDeadlineIsBounded: an acquire whose context has no
// deadline is bounded by hasql_acquire_timeout: AcquireMaster and DB did
// it, Listen, which waits for a master the same way (pick), did not: with
// no master it waited forever.
func TestListenWithoutDeadlineIsBounded(t *testing.T) {
	m, err := hasql.New(context.Background(), "postgres://u@127.0.0.1:1/db?hasql_check_timeout=200ms&hasql_acquire_timeout=1s",
		hasql.WithLogger(quiet))
	require.NoError(t, err)
	defer m.Close()
	start := time.Now()
	_, err = m.AcquireMaster(context.Background())
	require.ErrorIs(t, err, hasql.ErrNoMaster)
	t.Logf("AcquireMaster gave up after %s", time.Since(start))

	res := make(chan error, 1)
	go func() {
		l, err := m.Listen(context.Background(), "ch")
		if l != nil {
			l.Close()
		}
		res <- err
	}()
	select {
	case err := <-res:
		assert.ErrorIs(t, err, hasql.ErrNoMaster)
	case <-time.After(15 * time.Second):
		t.Error("Listen(context.Background()) with no master still waits after 15s; hasql_acquire_timeout is 1s")
		m.Close()
		<-res
	}
}
