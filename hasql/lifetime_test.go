package hasql_test

import (
	"context"
	"errors"
	"strconv"
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

// waitEnded waits until a connection made no later than made, of a pool whose
// lifetime is d, is past its end as its keeper knows it: marked by the
// node's check where the node keeps the lifetime, the time passed where
// pgxpool does (the pgx built with takes a lifetime of 0 for "at once").
func waitEnded(t *testing.T, ctx context.Context, m *hasql.Manager, made time.Time, d time.Duration, k int64) {
	t.Helper()
	if hasql.LifetimeByNode() {
		waitUntil(t, ctx, "connections marked past their end", func() bool { return hasql.ExpiredConns(m) >= k })
		return
	}
	waitFor(t, ctx, made, d)
}

// lifetimeManager is a Manager of c whose checks come every 100ms and whose
// pools keep connections for lifetime, up to 4 of them and none idle for
// pool_min_idle_conns; extra are more settings (or others for these),
// configure (when not nil) is each node's ConfigureNode.
func lifetimeManager(t *testing.T, ctx context.Context, c *testcluster.Cluster, lifetime time.Duration, configure func(*pgxpool.Config), extra ...string) *hasql.Manager {
	t.Helper()
	params := append([]string{"hasql_check_interval", "100ms", "pool_max_conn_lifetime", lifetime.String(),
		"pool_max_conns", "4", "pool_min_idle_conns", "0"}, extra...)
	var opts []hasql.Option
	if configure != nil {
		opts = append(opts, hasql.WithConfigureNode(func(_ hasql.NodeConfig, pc *pgxpool.Config) error {
			configure(pc)
			return nil
		}))
	}
	return newManager(t, ctx, withParams(c.DSN(), params...), opts...)
}

// TestConnLifetime: pool_max_conn_lifetime never cuts a connection in use
// (a transaction across the end commits); an acquire never hands out a
// connection past its end, released or idle, and the pool closes it.
func TestConnLifetime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]
	const lifetime = time.Second
	m := lifetimeManager(t, ctx, c, lifetime, nil)
	_, err := m.Master().Exec(ctx, "CREATE TABLE lifetime (v int)")
	require.NoError(t, err)

	t.Run("in use", func(t *testing.T) {
		held, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		made := time.Now()
		heldPID := int(held.Conn().PgConn().PID())
		tx, err := held.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, "INSERT INTO lifetime VALUES (1)")
		require.NoError(t, err)
		waitEnded(t, ctx, m, made, lifetime, 1)
		assert.Contains(t, backendPids(t, ctx, n1, "true"), heldPID, "cut while in use")
		_, err = tx.Exec(ctx, "INSERT INTO lifetime VALUES (2)")
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
		held.Release()
		conn, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		assert.NotEqual(t, heldPID, int(conn.Conn().PgConn().PID()), "the connection past its end was handed out again")
		conn.Release()
		waitGone(t, ctx, n1, []int{heldPID})
		assert.EqualValues(t, 2, rowsOn(t, ctx, n1, "SELECT count(*) FROM lifetime"))
	})

	t.Run("idle", func(t *testing.T) {
		conn, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		made := time.Now() // no earlier than the connection was made
		old := int(conn.Conn().PgConn().PID())
		conn.Release()
		waitEnded(t, ctx, m, made, lifetime, 1)
		conn, err = m.AcquireMaster(ctx)
		require.NoError(t, err)
		pid := int(conn.Conn().PgConn().PID())
		var one int
		require.NoError(t, conn.QueryRow(ctx, "SELECT 1").Scan(&one))
		conn.Release()
		assert.NotEqual(t, old, pid, "the connection past its end was handed out")
		waitGone(t, ctx, n1, []int{old})
	})
	waitUntil(t, ctx, "no connection left marked", func() bool { return hasql.ExpiredConns(m) == 0 })
	assert.Zero(t, hasql.InUse(m)[n1.Addr()], "in-use count")
}

func TestConnLifetimeReusesConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	m := newManager(t, ctx, withParams(c.DSN(), "pool_max_conns", "4", "pool_min_idle_conns", "0"))

	var pids []uint32
	for range 3 {
		conn, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		pids = append(pids, conn.Conn().PgConn().PID())
		conn.Release()
	}
	assert.Equal(t, []uint32{pids[0], pids[0], pids[0]}, pids, "each acquire got a new connection")
}

// TestConnLifetimeBeforeClose: pgxpool's BeforeClose is "called right
// before a connection is closed": a user's cleanup on the session runs on
// the open connection, once, for connections closed for their lifetime
// (one released past its end, one idle past it).
func TestConnLifetimeBeforeClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]

	var mu sync.Mutex
	cleanup := map[uint32][]error{} // pid → the cleanup statement's error, per call
	const lifetime = time.Second
	m := lifetimeManager(t, ctx, c, lifetime, func(pc *pgxpool.Config) {
		pc.BeforeClose = func(conn *pgx.Conn) {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := conn.Exec(cctx, "SELECT pg_advisory_unlock_all()")
			mu.Lock()
			cleanup[conn.PgConn().PID()] = append(cleanup[conn.PgConn().PID()], err)
			mu.Unlock()
		}
	})

	held, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	heldPID := held.Conn().PgConn().PID()
	idle, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	idlePID := idle.Conn().PgConn().PID()
	made := time.Now()
	idle.Release()
	waitEnded(t, ctx, m, made, lifetime, 2)
	held.Release()
	conn, err := m.AcquireMaster(ctx) // comes to both and has them closed
	require.NoError(t, err)
	assert.NotContains(t, []uint32{heldPID, idlePID}, conn.Conn().PgConn().PID())
	conn.Release()
	waitGone(t, ctx, n1, []int{int(heldPID), int(idlePID)})

	for _, pid := range []uint32{idlePID, heldPID} {
		waitUntil(t, ctx, "BeforeClose called", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(cleanup[pid]) > 0
		})
		mu.Lock()
		errs := cleanup[pid]
		mu.Unlock()
		require.Len(t, errs, 1, "BeforeClose calls for connection %d", pid)
		assert.NoError(t, errs[0], "BeforeClose's cleanup on connection %d, closed for its lifetime", pid)
	}
}

func waitFor(t *testing.T, ctx context.Context, from time.Time, d time.Duration) {
	t.Helper()
	waitUntil(t, ctx, "time to pass", func() bool { return time.Since(from) >= d })
}

type tenantKey struct{}

// The tests below guard the ways of closing idle connections past their
// end that the node does not take: taking every idle connection from the
// pool and giving it back (pgxpool's AcquireAllIdle) runs the user's
// PrepareConn outside an acquire, under a context without the acquire's
// values or deadline, and restarts every idle connection's idle time.

// TestConnLifetimeKeepsIdleTime: a connection reaching its end leaves the
// idle ones' idle time alone: pgxpool's ShouldPing (its default pings a
// connection idle for more than a second) and MaxConnIdleTime read it.
func TestConnLifetimeKeepsIdleTime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})

	var mu sync.Mutex
	seen := map[uint32]time.Duration{} // pid → IdleDuration ShouldPing was given
	m := lifetimeManager(t, ctx, c, time.Hour, func(pc *pgxpool.Config) {
		pc.ShouldPing = func(_ context.Context, p pgxpool.ShouldPingParams) bool {
			mu.Lock()
			seen[p.Conn.PgConn().PID()] = p.IdleDuration
			mu.Unlock()
			return false
		}
	})

	held, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	defer held.Release()
	a, err := m.AcquireMaster(ctx) // a new connection, far from its end
	require.NoError(t, err)
	pidA := a.Conn().PgConn().PID()
	a.Release()
	waitUntil(t, ctx, "the connection back idle", func() bool { return m.Stat().Nodes[0].InUse == 1 })
	released := time.Now()
	waitFor(t, ctx, released, time.Second) // idle a while before the other's end

	require.True(t, hasql.EndConn(held.Conn()), "the held connection has no end")
	waitUntil(t, ctx, "the held connection marked past its end", func() bool { return hasql.ExpiredConns(m) >= 1 })

	idleAtLeast := time.Since(released)
	a2, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	defer a2.Release()
	require.Equal(t, pidA, a2.Conn().PgConn().PID(), "the idle connection handed out")
	mu.Lock()
	got := seen[pidA]
	mu.Unlock()
	assert.GreaterOrEqual(t, got, idleAtLeast,
		"ShouldPing was told the connection was idle %v; it had been idle at least %v", got, idleAtLeast)
}

// TestConnLifetimeKeepsMaxConnIdleTime: pool_max_conn_idle_time closes a
// surplus idle connection after that long idle, also while other
// connections reach their ends one after another.
func TestConnLifetimeKeepsMaxConnIdleTime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]
	const idleTime, ends = 500 * time.Millisecond, 29
	m := lifetimeManager(t, ctx, c, time.Hour, nil, "pool_max_conn_idle_time", idleTime.String(),
		"pool_health_check_period", "100ms", "pool_max_conns", strconv.Itoa(ends+1))

	var held []*pgxpool.Conn
	defer func() {
		for _, h := range held {
			h.Release()
		}
	}()
	for range ends {
		h, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		held = append(held, h)
	}
	a, err := m.AcquireMaster(ctx) // a new connection, made last
	require.NoError(t, err)
	pidA := a.Conn().PgConn().PID()
	a.Release()

	// The held connections reach their ends one after another, each marked
	// by a check of its own (one check interval, 100ms, at least, against
	// the idle time of 500ms), until the idle one is closed.
	conn, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	gone := func() bool {
		var left int
		require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pidA).Scan(&left))
		return left == 0
	}
	for marked := 0; !gone(); {
		require.Less(t, marked, ends,
			"the idle connection, pool_max_conn_idle_time %v, outlived %d ends of other connections, each marked by a check", idleTime, ends)
		require.True(t, hasql.EndConn(held[marked].Conn()), "a held connection has no end")
		marked++
		waitUntil(t, ctx, "the connection marked past its end", func() bool { return hasql.ExpiredConns(m) >= int64(marked) })
	}
}

// waitNextCheck waits until the node's check loop has begun a check after
// now: what it did after its previous check is done.
func waitNextCheck(t *testing.T, ctx context.Context, n *testcluster.Node) {
	t.Helper()
	conn, err := n.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var since time.Time
	require.NoError(t, conn.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&since))
	waitUntil(t, ctx, "a check after now", func() bool {
		var later bool
		require.NoError(t, conn.QueryRow(ctx, `SELECT coalesce(max(query_start) > $1, false)
			FROM pg_stat_activity WHERE application_name = 'pgxha-check'`, since).Scan(&later))
		return later
	})
}

// TestConnLifetimeRunsNoAcquireHook: pgxpool's PrepareConn runs for an
// acquire, with the acquire's context; a hook that needs what the
// application put there refuses a connection without it. A connection
// reaching its end runs it for no other connection, and closes none of
// those within their lifetime.
func TestConnLifetimeRunsNoAcquireHook(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]

	var keyless atomic.Int64
	m := lifetimeManager(t, ctx, c, time.Hour, func(pc *pgxpool.Config) {
		pc.PrepareConn = func(ctx context.Context, conn *pgx.Conn) (bool, error) {
			if ctx.Value(tenantKey{}) == nil {
				keyless.Add(1)
				return false, errors.New("no tenant in the acquire's context")
			}
			return true, nil
		}
	})
	actx := context.WithValue(ctx, tenantKey{}, "t1")

	held, err := m.AcquireMaster(actx)
	require.NoError(t, err)
	defer held.Release()
	a, err := m.AcquireMaster(actx) // a new connection, far from its end
	require.NoError(t, err)
	pidA := a.Conn().PgConn().PID()
	a.Release()
	waitUntil(t, ctx, "the connection back idle", func() bool { return m.Stat().Nodes[0].InUse == 1 })

	require.True(t, hasql.EndConn(held.Conn()), "the held connection has no end")
	waitUntil(t, ctx, "the held connection marked past its end", func() bool { return hasql.ExpiredConns(m) >= 1 })
	waitNextCheck(t, ctx, n1)
	assert.Zero(t, keyless.Load(), "PrepareConn called without an acquire's context")
	a2, err := m.AcquireMaster(actx)
	require.NoError(t, err)
	defer a2.Release()
	assert.Equal(t, pidA, a2.Conn().PgConn().PID(), "the idle connection, within its lifetime, was closed")
}

// TestConnLifetimeHoldsNoCheck: a PrepareConn that validates a connection
// with a ping (pgx's documented use of the hook) runs only in acquires: a
// master that hangs as its connections reach their ends is marked down by
// its checks, which run no user hook.
func TestConnLifetimeHoldsNoCheck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]

	m := lifetimeManager(t, ctx, c, time.Hour, func(pc *pgxpool.Config) {
		pc.PrepareConn = func(ctx context.Context, conn *pgx.Conn) (bool, error) {
			return conn.Ping(ctx) == nil, nil
		}
	}, "hasql_check_timeout", "2s")
	require.NoError(t, m.WaitReady(ctx, 1, 0))

	held, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	defer held.Release()
	idle, err := m.AcquireMaster(ctx) // idle from now on, far from its end
	require.NoError(t, err)
	idle.Release()

	require.NoError(t, n1.Pause())
	t.Cleanup(func() { _ = n1.Resume() })
	paused := time.Now()
	// The held one reaches its end while the master hangs: the check under
	// way when it paused times out, and marks it.
	require.True(t, hasql.EndConn(held.Conn()), "the held connection has no end")

	// Two timed-out checks (2s each) mark the node down: give it five times that.
	dctx, dcancel := context.WithTimeout(ctx, 20*time.Second)
	defer dcancel()
	waitUntil(t, dctx, "the paused master marked down", func() bool { return !statusOf(m, "n1").Up })
	t.Logf("down %v after the pause", time.Since(paused))
}

// TestConnLifetimeMarkedWhileReleasing: a connection found past its end
// while its release is still under way (the release hook ran before the
// mark; pgxpool runs AfterRelease, a reset statement of the user's, say,
// before it goes back idle) is never handed out: the next acquire that
// comes to it closes it.
func TestConnLifetimeMarkedWhileReleasing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]

	var hold atomic.Bool
	unblock := make(chan struct{})
	const lifetime = 2 * time.Second
	m := lifetimeManager(t, ctx, c, lifetime, func(pc *pgxpool.Config) {
		pc.AfterRelease = func(conn *pgx.Conn) bool {
			if hold.Load() {
				<-unblock // a slow reset of the session
			}
			return true
		}
	})

	x, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	made := time.Now()
	pid := int(x.Conn().PgConn().PID())
	hold.Store(true)
	x.Release() // its AfterRelease runs until unblocked
	waitEnded(t, ctx, m, made, lifetime, 1)
	hold.Store(false)
	close(unblock) // x goes back idle
	waitUntil(t, ctx, "the connection back idle", func() bool {
		return m.Stat().Nodes[0].InUse == 0 // the pool's count: after AfterRelease
	})

	conn, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	assert.NotEqual(t, pid, int(conn.Conn().PgConn().PID()), "the connection past its end was handed out")
	conn.Release()
	waitGone(t, ctx, n1, []int{pid})
}

// TestVersionAtLeast: the pgx version test that decides who keeps the
// lifetime reads releases, pre-releases and pseudo-versions, and takes
// what it cannot read for too old.
func TestVersionAtLeast(t *testing.T) {
	for v, want := range map[string]bool{
		"v5.13.0": true, "v5.13.1": true, "v5.14.0": true, "v6.0.0": true,
		"v5.12.9": false, "v5.8.0": false, "v4.18.3": false,
		"v5.13.1-0.20260901120000-abcdef123456": true, "v5.12.1-0.20260601120000-abcdef123456": false,
		"v5.13.0-rc.1": false, "v5.13.0-0.20260901120000-abcdef123456": false, "v5.13.0+incompatible": true, "": false, "devel": false, "v5.13": false, "v5.x.0": false,
	} {
		assert.Equal(t, want, hasql.VersionAtLeast(v, 5, 13, 0), v)
	}
}

// TestConnLifetimeBeforeCloseBlocksNothing: a BeforeClose that blocks (a
// cleanup statement to a server that hangs) holds up neither an acquire
// that comes to a connection past its end nor the release of one: it runs
// where pgxpool runs it, in the pool's own goroutine.
func TestConnLifetimeBeforeCloseBlocksNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	unblock := make(chan struct{})
	var blocking atomic.Bool
	const lifetime = time.Second
	m := lifetimeManager(t, ctx, c, lifetime, func(pc *pgxpool.Config) {
		pc.BeforeClose = func(conn *pgx.Conn) {
			if blocking.Load() {
				<-unblock
			}
		}
	})
	t.Cleanup(func() { close(unblock) }) // before the Manager closes

	idle, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	held, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	made := time.Now()
	idle.Release()
	waitEnded(t, ctx, m, made, lifetime, 2)
	blocking.Store(true)

	returned := make(chan struct{})
	go func() { held.Release(); close(returned) }()
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	select {
	case <-returned:
	case <-rctx.Done():
		t.Fatal("Release of a connection past its end blocked in BeforeClose")
	}
	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	defer acancel()
	conn, err := m.AcquireMaster(actx) // comes to both, past their ends
	require.NoError(t, err, "an acquire that came to connections past their end")
	conn.Release()
}

// releaseSeer is a tracer that records whether the connections it is
// handed at their release are open.
type releaseSeer struct {
	closedAtRelease atomic.Int64
	releases        atomic.Int64
}

func (r *releaseSeer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (r *releaseSeer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *releaseSeer) TraceRelease(_ *pgxpool.Pool, d pgxpool.TraceReleaseData) {
	r.releases.Add(1)
	if d.Conn.IsClosed() {
		r.closedAtRelease.Add(1)
	}
}

// TestConnLifetimeReleaseTracerSeesOpenConn: a user's pgxpool.ReleaseTracer
// is handed the connection as the caller left it, also one past its end.
func TestConnLifetimeReleaseTracerSeesOpenConn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	seer := &releaseSeer{}
	const lifetime = time.Second
	m := lifetimeManager(t, ctx, c, lifetime, func(pc *pgxpool.Config) {
		pc.ConnConfig.Tracer = seer
	})
	conn, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	made := time.Now()
	waitEnded(t, ctx, m, made, lifetime, 1)
	conn.Release()
	require.EqualValues(t, 1, seer.releases.Load())
	assert.Zero(t, seer.closedAtRelease.Load(), "the ReleaseTracer was handed a closed connection")
}

// TestConnLifetimeNoPingOfExpired: an acquire that comes to idle
// connections past their end refuses them without a ping (nor a look by
// the pool's ShouldPing): after a quiet spell one acquire would otherwise
// ping each of them in turn, to a server that may not answer.
func TestConnLifetimeNoPingOfExpired(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	const lifetime = time.Second
	var mu sync.Mutex
	var seen []uint32
	m := lifetimeManager(t, ctx, c, lifetime, func(pc *pgxpool.Config) {
		pc.ShouldPing = func(_ context.Context, p pgxpool.ShouldPingParams) bool {
			mu.Lock()
			seen = append(seen, p.Conn.PgConn().PID())
			mu.Unlock()
			return p.IdleDuration > time.Second // pgxpool's default
		}
	})
	old := map[uint32]bool{}
	var held []*pgxpool.Conn
	for range 3 {
		conn, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		old[conn.Conn().PgConn().PID()] = true
		held = append(held, conn)
	}
	made := time.Now()
	for _, conn := range held {
		conn.Release()
	}
	waitEnded(t, ctx, m, made, lifetime, 3)
	mu.Lock()
	seen = nil
	mu.Unlock()
	waitFor(t, ctx, made, lifetime+1100*time.Millisecond) // idle for more than a second
	conn, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	assert.False(t, old[conn.Conn().PgConn().PID()], "a connection past its end handed out")
	conn.Release()
	mu.Lock()
	defer mu.Unlock()
	for _, pid := range seen {
		assert.False(t, old[pid], "ShouldPing consulted on connection %d, past its end", pid)
	}
}
