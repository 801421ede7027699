package hasql_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// addrOf returns the DSN address of the testcluster node named name.
func addrOf(c *testcluster.Cluster, name string) string {
	for _, n := range c.Nodes() {
		if n.Name() == name {
			return n.Addr()
		}
	}
	return ""
}

// waitingStable reports whether, for the whole of d, the node at addr keeps
// a second acquire counted in use (the held connection and a waiter in its
// full pool), or done has a result; it polls.
func waitingIn(m *hasql.Manager, addr string, want int64, done chan error, d time.Duration) bool {
	since := time.Time{}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if len(done) > 0 {
			return false
		}
		if hasql.InUse(m)[addr] == want {
			if since.IsZero() {
				since = time.Now()
			}
			if time.Since(since) >= d {
				return true
			}
		} else {
			since = time.Time{}
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// TestFallbackWaitsInTheMastersFullPool: a replica read with
// FallbackToMaster whose replica's pool cannot open a connection (the
// replica is out of connection slots: "too many clients"; its check
// connection, opened before, keeps it a healthy replica) falls back to the
// master, whose pool is full (one held connection). The wait in the full
// pool judged the master against the candidates without the acquire's
// failed nodes: the replica was one, the master was not, so each wait
// ended at once and the acquire gave up in microseconds. It waits for the
// master's connection now.
func TestFallbackWaitsInTheMastersFullPool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n2 := c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "pool_max_conns", "1"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	// n2 runs out of connection slots, as a busy server does; the
	// Manager's check connection to it is already open.
	var hogs []*pgx.Conn
	defer func() {
		for _, h := range hogs {
			h.Close(context.Background())
		}
	}()
	fill := func() {
		for {
			h, err := n2.Conn(ctx)
			if err != nil {
				require.Contains(t, err.Error(), "too many", "the premise: n2 is out of slots")
				return
			}
			hogs = append(hogs, h)
			require.Less(t, len(hogs), 400)
		}
	}
	fill()
	// n2 stays a replica (its checks pass).
	require.True(t, statusOf(m, "n2").Role.IsReplica())

	held, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	released := false
	defer func() {
		if !released {
			held.Release()
		}
	}()

	// The pool's warm connection to n2 is ended (its slot taken by a hog
	// at once): n2's pool has no usable connection and can open none.
	pids := make([]uint32, len(hogs))
	for i, h := range hogs {
		pids[i] = h.PgConn().PID()
	}
	var ended int
	require.NoError(t, hogs[0].QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND application_name <> 'pgxha-check' AND pid <> ALL($1::int4[])`, pids).Scan(&ended))
	t.Logf("ended %d pool connections of n2", ended)
	before := len(hogs)
	require.Eventually(t, func() bool { fill(); return len(hogs) >= before+ended }, 30*time.Second, 5*time.Millisecond)
	for _, ns := range m.Stat().Nodes {
		t.Logf("%s pool: %+v", ns.Name, ns.Pool)
	}
	done := make(chan error, 1)
	go func() {
		actx, acancel := context.WithTimeout(ctx, 30*time.Second)
		defer acancel()
		conn, err := m.AcquireReplica(actx, hasql.FallbackToMaster())
		if err == nil {
			t.Logf("fallback read got %s", nodeOf(c, conn))
			conn.Release()
		}
		done <- err
	}()
	// The read waits in the master's pool for its only connection (in use
	// counts the held one and the waiter), then gets it once released.
	waited := waitingIn(m, addrOf(c, "n1"), 2, done, 300*time.Millisecond)
	t.Logf("hogs %d, waited %v, n2: %+v", len(hogs), waited, statusOf(m, "n2").Role)
	held.Release()
	released = true
	err = <-done
	require.NoError(t, err, "a FallbackToMaster read whose replica pool failed did not wait for the master's full pool (waited: %v)", waited)
}

// TestLagFlapsDoNotEndAWaitingAcquire: an acquire with MaxLag that waits in
// a replica's full pool is sent back to pick again each time the replica's
// lag goes over the limit; each such round counted against the loop's
// bound of 2*len(nodes) lost rounds, and the fifth flap ended the acquire
// ("the roles kept changing") with its context far from done. Those rounds
// (each takes a change of the view) have a bound of their own now.
func TestLagFlapsDoNotEndAWaitingAcquire(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "pool_max_conns", "1"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	_, err := m.Master().Exec(ctx, "CREATE TABLE fill (v text)")
	require.NoError(t, err)
	master, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer master.Close(context.Background())

	const limit = 64 << 10
	lagOK := func() bool {
		st := statusOf(m, "n2")
		return st.Role.IsReplica() && st.LagKnown && st.LagBytes <= limit && !st.ReplayPaused
	}
	require.Eventually(t, lagOK, 30*time.Second, 5*time.Millisecond)

	held, err := m.AcquireReplica(ctx)
	require.NoError(t, err)
	released := false
	defer func() {
		if !released {
			held.Release()
		}
	}()
	n2addr := addrOf(c, "n2")

	done := make(chan error, 1)
	go func() {
		actx, acancel := context.WithTimeout(ctx, 2*time.Minute)
		defer acancel()
		conn, err := m.AcquireReplica(actx, hasql.MaxLag(limit, 0))
		if err == nil {
			conn.Release()
		}
		done <- err
	}()

	flaps := 0
	for ; flaps < 8 && len(done) == 0; flaps++ {
		// The waiter is in n2's full pool.
		if !waitingIn(m, n2addr, 2, done, 50*time.Millisecond) {
			break
		}
		require.NoError(t, n2.PauseReplay(ctx))
		_, err := master.Exec(ctx, "INSERT INTO fill SELECT repeat('x', 1000) FROM generate_series(1, 1000)")
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			st := statusOf(m, "n2")
			return len(done) > 0 || hasql.InUse(m)[n2addr] == 1 || st.LagKnown && st.LagBytes > limit
		}, 30*time.Second, time.Millisecond, "the Manager sees n2's lag pass the limit")
		// The waiter leaves n2's pool (48264c7), or stays in it through
		// five more checks of n2 (before).
		checks, seen := 0, statusOf(m, "n2").LastCheck
		require.Eventually(t, func() bool {
			if st := statusOf(m, "n2"); st.LastCheck.After(seen) {
				checks, seen = checks+1, st.LastCheck
			}
			return len(done) > 0 || hasql.InUse(m)[n2addr] == 1 || checks >= 5
		}, 30*time.Second, time.Millisecond)
		st := statusOf(m, "n2")
		t.Logf("flap %d: in use %d, lag %d known %v paused %v", flaps, hasql.InUse(m)[n2addr], st.LagBytes, st.LagKnown, st.ReplayPaused)
		require.NoError(t, n2.ResumeReplay(ctx))
		require.Eventually(t, func() bool { return len(done) > 0 || lagOK() }, 30*time.Second, time.Millisecond)
	}
	t.Logf("lag flaps while the acquire waited: %d", flaps)
	held.Release()
	released = true
	err = <-done
	require.NoError(t, err, "an acquire waiting in a replica's full pool gave up after the replica's lag flapped %d times", flaps)
}

// TestConnectBoundAtLeastTheCheckTimeout: the pools' connect_timeout, when
// not set, bounds a connection being made for acquires without a deadline.
// It was hasql_acquire_timeout alone: set short (300ms, so that handlers
// without a deadline fail fast), an AcquireMaster whose own context allowed
// 20s could not connect to a healthy master 100ms away. It is now at least
// hasql_check_timeout (a server the checks connect to, the pool can).
func TestConnectBoundAtLeastTheCheckTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]
	require.NoError(t, n1.SetLatency(100*time.Millisecond))
	defer func() { _ = n1.SetLatency(0) }()
	for _, acquireTimeout := range []string{"30s", "300ms"} {
		m := newManager(t, ctx, withParams(c.DSN(), "hasql_acquire_timeout", acquireTimeout,
			"hasql_check_timeout", "5s", "hasql_check_interval", "500ms"))
		require.NoError(t, m.WaitReady(ctx, 1, 0))
		actx, acancel := context.WithTimeout(ctx, 20*time.Second)
		start := time.Now()
		conn, err := m.AcquireMaster(actx)
		acancel()
		t.Logf("hasql_acquire_timeout=%s: AcquireMaster with a 20s deadline: %v after %s", acquireTimeout, err, time.Since(start).Round(time.Millisecond))
		if err == nil {
			conn.Release()
		}
		m.Close()
		require.NoError(t, err, "hasql_acquire_timeout=%s: an acquire with its own 20s deadline could not connect to a healthy master 100ms away", acquireTimeout)
	}
}

// TestCloseDuringFullPoolWaits: many acquires waiting in a full
// master pool (each with its watcher goroutine) while the master flaps
// and the Manager closes: every acquire returns, and no goroutine stays.
func TestCloseDuringFullPoolWaits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	base := runtime.NumGoroutine()
	cfg, err := hasql.ParseConfig(withParams(c.DSN(), "hasql_check_interval", "100ms", "pool_max_conns", "2"))
	require.NoError(t, err)
	cfg.Logger = quiet
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	var helds []*pgxpool.Conn
	for range 2 {
		h, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		helds = append(helds, h)
	}
	const waiters = 40
	var wg sync.WaitGroup
	var got, closed, other atomic.Int64
	for range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := m.AcquireMaster(ctx)
			switch {
			case err == nil:
				got.Add(1)
				conn.Release()
			case errors.Is(err, hasql.ErrClosed):
				closed.Add(1)
			default:
				other.Add(1)
				t.Logf("acquire: %v", err)
			}
		}()
	}
	n1 := addrOf(c, "n1")
	require.Eventually(t, func() bool { return hasql.InUse(m)[n1] == 2+waiters }, 30*time.Second, time.Millisecond)
	closeDone := make(chan struct{})
	go func() { m.Close(); close(closeDone) }() // it waits for the held connections (pgxpool.Close)
	waitersDone := make(chan struct{})
	go func() { wg.Wait(); close(waitersDone) }()
	select {
	case <-waitersDone:
	case <-time.After(30 * time.Second):
		t.Errorf("acquires waiting in the full pool did not end 30s after Close began (got %d, closed %d, other %d)", got.Load(), closed.Load(), other.Load())
	}
	for _, h := range helds {
		h.Release()
	}
	<-closeDone
	wg.Wait()
	t.Logf("got %d, closed %d, other %d", got.Load(), closed.Load(), other.Load())
	assert.EqualValues(t, waiters, closed.Load()+got.Load()+other.Load())
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= base+2 }, 10*time.Second, 10*time.Millisecond,
		"goroutines: %d before, %d after", base, runtime.NumGoroutine())
}
