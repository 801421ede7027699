package hasql_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgxha/pgxha/balancer"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// withParams adds query parameters to a URL DSN.
func withParams(dsn string, kv ...string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		panic(err)
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// newManager makes a Manager closed with the test, whose decision trace is
// replayed into the decision core once it is (see traced).
func newManager(t *testing.T, ctx context.Context, dsn string, opts ...hasql.Option) *hasql.Manager {
	t.Helper()
	m, err := hasql.New(ctx, dsn, append([]hasql.Option{hasql.WithLogger(quiet), traced(t)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

// nodeOf tells which testcluster node a pooled connection reaches.
func nodeOf(c *testcluster.Cluster, conn *pgxpool.Conn) string {
	port := strconv.Itoa(int(conn.Conn().Config().Port))
	for _, n := range c.Nodes() {
		if strings.HasSuffix(n.Addr(), ":"+port) {
			return n.Name()
		}
	}
	return "?"
}

func roles(m *hasql.Manager) map[string]hasql.Role {
	out := map[string]hasql.Role{}
	for _, n := range m.Nodes() {
		out[n.Name] = n.Role
	}
	return out
}

func TestManager(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	dsn := withParams(c.DSN(), "hasql_check_interval", "100ms")
	m := newManager(t, ctx, dsn)
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	t.Run("roles", func(t *testing.T) {
		nodes := m.Nodes()
		require.Len(t, nodes, 3)
		assert.Equal(t, []string{n1.Addr(), n2.Addr(), n3.Addr()}, []string{nodes[0].Addr, nodes[1].Addr, nodes[2].Addr}, "DSN order")
		assert.Equal(t, map[string]hasql.Role{"n1": hasql.RoleMaster, "n2": hasql.RoleSyncReplica, "n3": hasql.RoleAsyncReplica}, roles(m))
		assert.Equal(t, "sync", nodes[1].SyncState)
		assert.Equal(t, "async", nodes[2].SyncState)
		for _, n := range nodes {
			assert.NoError(t, n.LastError)
			assert.Equal(t, uint32(1), n.Timeline)
			assert.NotZero(t, n.LastCheck)
			assert.Positive(t, n.CheckLatency)
		}
		assert.True(t, nodes[0].Writable)
		assert.True(t, nodes[1].LagKnown)
	})

	t.Run("library settings never reach the server", func(t *testing.T) {
		m2 := newManager(t, ctx, withParams(c.DSN(), "hasql_check_timeout", "2s", "hasql_balancer", "random",
			"target_session_attrs", "read-write", "load_balance_hosts", "random", "application_name", "svc"))
		var app string
		var setting *string
		require.NoError(t, m2.Replica().QueryRow(ctx,
			"SELECT current_setting('application_name'), current_setting('hasql_check_timeout', true)").Scan(&app, &setting))
		assert.Equal(t, "svc", app)
		assert.Nil(t, setting)
		var inRecovery bool
		require.NoError(t, m2.Replica().QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery),
			"target_session_attrs=read-write does not stop connections to replicas: the manager routes")
		assert.True(t, inRecovery)
	})

	t.Run("AcquireMaster reaches the master only", func(t *testing.T) {
		for i := 0; i < 50; i++ {
			conn, err := m.AcquireMaster(ctx)
			require.NoError(t, err)
			var inRecovery bool
			require.NoError(t, conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery))
			assert.False(t, inRecovery)
			assert.Equal(t, "n1", nodeOf(c, conn))
			conn.Release()
		}
	})

	t.Run("AcquireReplica reaches replicas only", func(t *testing.T) {
		for i := 0; i < 50; i++ {
			conn, err := m.AcquireReplica(ctx)
			require.NoError(t, err)
			var inRecovery bool
			require.NoError(t, conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery))
			assert.True(t, inRecovery)
			conn.Release()
		}
	})

	t.Run("SyncOnly reaches the sync replica only", func(t *testing.T) {
		for i := 0; i < 100; i++ {
			conn, err := m.AcquireReplica(ctx, hasql.SyncOnly())
			require.NoError(t, err)
			assert.Equal(t, "n2", nodeOf(c, conn))
			conn.Release()
		}
		for i := 0; i < 20; i++ {
			conn, err := m.AcquireReplica(ctx, hasql.PreferSync())
			require.NoError(t, err)
			assert.Equal(t, "n2", nodeOf(c, conn))
			conn.Release()
		}
	})

	t.Run("plain and preset acquires allocate nothing beyond the pool", func(t *testing.T) {
		syncOnly, preferSync, fallback := hasql.SyncOnly(), hasql.PreferSync(), hasql.FallbackToMaster()
		for _, tc := range []struct {
			name    string
			acquire func() (*pgxpool.Conn, error)
		}{
			{"AcquireMaster", func() (*pgxpool.Conn, error) { return m.AcquireMaster(ctx) }},
			{"AcquireReplica", func() (*pgxpool.Conn, error) { return m.AcquireReplica(ctx) }},
			{"SyncOnly", func() (*pgxpool.Conn, error) { return m.AcquireReplica(ctx, syncOnly) }},
			{"PreferSync+FallbackToMaster", func() (*pgxpool.Conn, error) { return m.AcquireReplica(ctx, preferSync, fallback) }},
		} {
			var failed error
			allocs := testing.AllocsPerRun(200, func() {
				conn, err := tc.acquire()
				if err != nil {
					failed = err
					return
				}
				conn.Release()
			})
			require.NoError(t, failed, tc.name)
			assert.Zero(t, allocs, "%s: allocations per acquire and release", tc.name)
		}
	})

	t.Run("round robin spreads evenly", func(t *testing.T) {
		counts := map[string]int{}
		for i := 0; i < 1000; i++ {
			conn, err := m.AcquireReplica(ctx)
			require.NoError(t, err)
			counts[nodeOf(c, conn)]++
			conn.Release()
		}
		assert.Len(t, counts, 2)
		for _, name := range []string{"n2", "n3"} {
			assert.InDelta(t, 500, counts[name], 50, "within 10%% of even: %v", counts)
		}
	})

	t.Run("routed queriers", func(t *testing.T) {
		_, err := m.Master().Exec(ctx, "CREATE TABLE items (id int PRIMARY KEY, v text)")
		require.NoError(t, err)
		tx, err := m.Master().Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, "INSERT INTO items VALUES (1, 'a')")
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
		n, err := m.Master().CopyFrom(ctx, pgx.Identifier{"items"}, []string{"id", "v"},
			pgx.CopyFromRows([][]any{{2, "b"}, {3, "c"}}))
		require.NoError(t, err)
		assert.Equal(t, int64(2), n)
		b := &pgx.Batch{}
		b.Queue("INSERT INTO items VALUES (4, 'd')")
		b.Queue("SELECT count(*) FROM items")
		br := m.Master().SendBatch(ctx, b)
		_, err = br.Exec()
		require.NoError(t, err)
		var count int
		require.NoError(t, br.QueryRow().Scan(&count))
		require.NoError(t, br.Close())
		assert.Equal(t, 4, count)

		lsn, err := m.CurrentLSN(ctx)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			var c int
			return m.Replica(hasql.MinLSN(lsn)).QueryRow(ctx, "SELECT count(*) FROM items").Scan(&c) == nil && c == 4
		}, 10*time.Second, 10*time.Millisecond)
		rows, err := m.Replica(hasql.MinLSN(lsn)).Query(ctx, "SELECT id FROM items ORDER BY id")
		require.NoError(t, err)
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
		require.NoError(t, err)
		assert.Equal(t, []int{1, 2, 3, 4}, ids)

		// On a replica that has the table (the other may not have replayed
		// it yet on a busy machine).
		_, err = m.Replica(hasql.MinLSN(lsn)).Exec(ctx, "INSERT INTO items VALUES (5, 'e')")
		assert.ErrorContains(t, err, "read-only", "a replica refuses writes")
		err = m.Replica(hasql.MinLSN(lsn)).QueryRow(ctx, "SELECT 1 FROM items WHERE id = 99").Scan(new(int))
		assert.ErrorIs(t, err, pgx.ErrNoRows)
		for _, n := range m.Nodes() {
			_ = n // every connection went back: the pools are idle
		}
		stat := inUseTotal(t, m)
		assert.Zero(t, stat, "every routed call released its connection")
	})

	t.Run("a saturated pool does not make its node look dead", func(t *testing.T) {
		small := newManager(t, ctx, withParams(dsn, "pool_max_conns", "2"))
		var held []*pgxpool.Conn
		for i := 0; i < 2; i++ {
			conn, err := small.AcquireMaster(ctx)
			require.NoError(t, err)
			held = append(held, conn)
		}
		waitCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := small.AcquireMaster(waitCtx)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, "the third acquire waits for the pool")
		before := small.Nodes()[0].LastCheck
		require.Eventually(t, func() bool { return small.Nodes()[0].LastCheck.After(before.Add(300 * time.Millisecond)) },
			5*time.Second, 10*time.Millisecond, "checks go on, on their own connection")
		st := small.Nodes()[0]
		assert.Equal(t, hasql.RoleMaster, st.Role)
		assert.NoError(t, st.LastError)
		assert.False(t, st.Suspect)
		for _, conn := range held {
			conn.Release()
		}
	})

	t.Run("balancers on a real cluster", func(t *testing.T) {
		spread := func(m *hasql.Manager, hold func()) map[string]int {
			counts := map[string]int{}
			for i := 0; i < 600; i++ {
				conn, err := m.AcquireReplica(ctx)
				require.NoError(t, err)
				counts[nodeOf(c, conn)]++
				conn.Release()
			}
			return counts
		}
		random := spread(newManager(t, ctx, withParams(dsn, "hasql_balancer", "random")), nil)
		assert.InDelta(t, 300, random["n2"], 75, "random: %v", random)

		weighted := spread(newManager(t, ctx, withParams(dsn, "hasql_balancer", "weighted"), hasql.WithNodeWeight(n3.Addr(), 3)), nil)
		assert.InDelta(t, 150, weighted["n2"], 60, "weighted 1:3: %v", weighted)

		first := spread(newManager(t, ctx, withParams(dsn, "load_balance_hosts", "disable")), nil)
		assert.Equal(t, map[string]int{"n2": 600}, first, "first in DSN order")

		lb := newManager(t, ctx, withParams(dsn, "hasql_balancer", "least_busy"))
		var held []*pgxpool.Conn
		for i := 0; i < 3; i++ {
			conn, err := lb.AcquireReplica(ctx, hasql.SyncOnly())
			require.NoError(t, err)
			held = append(held, conn)
		}
		busy := spread(lb, nil)
		assert.Equal(t, map[string]int{"n3": 600}, busy, "least busy avoids the node with connections in use")
		for _, conn := range held {
			conn.Release()
		}

		mixed := spread(newManager(t, ctx, dsn, hasql.WithMasterReadWeight(1)), nil)
		assert.Positive(t, mixed["n1"], "with a master read weight the master serves reads: %v", mixed)
	})

	t.Run("lag grows under paused replay and MaxLag excludes the replica", func(t *testing.T) {
		require.NoError(t, n3.PauseReplay(ctx))
		defer n3.ResumeReplay(ctx)
		_, err := m.Master().Exec(ctx, "CREATE TABLE filler AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 20000) g")
		require.NoError(t, err)
		var first hasql.NodeStatus
		require.Eventually(t, func() bool {
			first = m.Nodes()[2]
			return first.LagBytes > 1<<20 && first.ReplayPaused
		}, 10*time.Second, 10*time.Millisecond, "n3's byte lag grows, and its check shows replay paused")
		require.Eventually(t, func() bool { return m.Nodes()[2].Lag > first.Lag+200*time.Millisecond },
			10*time.Second, 10*time.Millisecond, "n3's time lag grows while replay is paused")
		assert.Less(t, m.Nodes()[1].LagBytes, int64(1<<20), "the other replica keeps up")
		for i := 0; i < 100; i++ {
			conn, err := m.AcquireReplica(ctx, hasql.MaxLag(1<<20, 0))
			require.NoError(t, err)
			assert.Equal(t, "n2", nodeOf(c, conn))
			conn.Release()
		}
		for i := 0; i < 20; i++ {
			conn, err := m.AcquireReplica(ctx, hasql.MaxLag(0, 100*time.Millisecond))
			require.NoError(t, err)
			assert.Equal(t, "n2", nodeOf(c, conn))
			conn.Release()
		}
		lagged := newManager(t, ctx, withParams(dsn, "hasql_max_lag_bytes", "1MB"))
		require.NoError(t, lagged.WaitReady(ctx, 1, 2))
		require.Eventually(t, func() bool { return lagged.Nodes()[2].LagBytes > 1<<20 }, 10*time.Second, 10*time.Millisecond)
		for i := 0; i < 50; i++ {
			conn, err := lagged.AcquireReplica(ctx)
			require.NoError(t, err)
			assert.Equal(t, "n2", nodeOf(c, conn), "hasql_max_lag_bytes applies to plain acquires")
			conn.Release()
		}

		lsn, err := m.CurrentLSN(ctx)
		require.NoError(t, err)
		for i := 0; i < 20; i++ {
			var name string
			require.NoError(t, m.Replica(hasql.MinLSN(lsn)).QueryRow(ctx, "SELECT current_setting('cluster_name')").Scan(&name))
			assert.Equal(t, "n2", name, "MinLSN never reads from the paused replica")
		}
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		conn, err := m.AcquireReplica(short, hasql.MinLSN(lsn), hasql.SyncOnly(), hasql.MaxLag(0, 0))
		cancel()
		require.NoError(t, err, "the sync replica has the LSN")
		assert.Equal(t, "n2", nodeOf(c, conn))
		conn.Release()
	})
}

func inUseTotal(t *testing.T, m *hasql.Manager) int64 {
	t.Helper()
	var total int64
	for _, s := range m.Stat().Nodes {
		total += s.InUse
	}
	return total
}

func TestPartitionedReplicaIsExcluded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	n3 := c.Nodes()[2]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "200ms", "hasql_check_timeout", "500ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	var reads, failures atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	const readers = 4
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
				var one int
				err := m.Replica().QueryRow(rctx, "SELECT 1").Scan(&one)
				rcancel()
				if err != nil {
					failures.Add(1)
				} else {
					reads.Add(1)
				}
			}
		}()
	}
	require.Eventually(t, func() bool { return reads.Load() > 100 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, n3.Partition())
	require.Eventually(t, func() bool {
		st := m.Nodes()[2]
		return st.Suspect || st.Role == hasql.RoleUnknown
	}, 10*time.Second, 5*time.Millisecond, "the hung replica is excluded")
	after := reads.Load()
	require.Eventually(t, func() bool { return reads.Load() > after+200 }, 10*time.Second, 10*time.Millisecond,
		"reads keep flowing to the other replica")
	require.Eventually(t, func() bool { return m.Nodes()[2].Role == hasql.RoleUnknown }, 10*time.Second, 10*time.Millisecond,
		"a second timeout marks it down")
	assert.ErrorContains(t, m.Nodes()[2].LastError, "timed out")
	close(stop)
	wg.Wait()
	// A read in flight on the hung replica is not run again elsewhere: a
	// node that cannot be checked gives no proof that it was still a
	// replica (it may have been promoted unseen and run the statement as a
	// write). At most those in flight fail; the others go to n2.
	assert.LessOrEqual(t, failures.Load(), int64(readers), "only the reads in flight on the hung replica failed")

	require.NoError(t, n3.Heal())
	require.Eventually(t, func() bool { return m.Nodes()[2].Role == hasql.RoleAsyncReplica }, 10*time.Second, 10*time.Millisecond,
		"the healed replica comes back")
}

func TestNoReplicaThenFallback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	m := newManager(t, ctx, c.DSN())
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	require.NoError(t, c.Nodes()[1].Kill())
	require.NoError(t, c.Nodes()[2].Kill())
	require.Eventually(t, func() bool {
		r := roles(m)
		return r["n2"] == hasql.RoleUnknown && r["n3"] == hasql.RoleUnknown
	}, 10*time.Second, 5*time.Millisecond)

	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := m.AcquireReplica(short)
	cancelShort()
	require.ErrorIs(t, err, hasql.ErrNoReplica)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var nn *hasql.NoNodeError
	require.ErrorAs(t, err, &nn)
	assert.Contains(t, err.Error(), c.Nodes()[1].Addr()+" (n2) down: ")
	assert.Contains(t, err.Error(), "connection refused", "each node's last error is in the error")

	conn, err := m.AcquireReplica(ctx, hasql.FallbackToMaster())
	require.NoError(t, err)
	var inRecovery bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery))
	conn.Release()
	assert.False(t, inRecovery, "FallbackToMaster serves from the master")

	// A waiting acquire wakes when a replica comes back: no polling.
	got := make(chan error, 1)
	go func() {
		conn, err := m.AcquireReplica(ctx)
		if err == nil {
			conn.Release()
		}
		got <- err
	}()
	require.NoError(t, c.Nodes()[2].Start())
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting acquire did not wake up")
	}
}

func TestBadConnectionsAreNodesDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]
	u, err := url.Parse(c.DSN())
	require.NoError(t, err)

	for _, tc := range []struct {
		name, dsn, want string
	}{
		{"wrong password", strings.Replace(c.DSN(), ":pgxha@", ":"+secret+"@", 1), "password authentication failed"},
		{"database missing", strings.Replace(c.DSN(), "/postgres?", "/nosuchdb?", 1), `database "nosuchdb" does not exist`},
		{"unreachable host", "postgres://postgres:" + secret + "@127.0.0.1:1/postgres?sslmode=disable", "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t, ctx, tc.dsn)
			st := m.Nodes()[0]
			require.Error(t, st.LastError, "the node is down with its error")
			assert.Equal(t, hasql.RoleUnknown, st.Role)
			assert.Contains(t, st.LastError.Error(), tc.want)
			assert.NotContains(t, st.LastError.Error(), secret)
			short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
			_, err := m.AcquireMaster(short)
			cancelShort()
			require.ErrorIs(t, err, hasql.ErrNoMaster)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), secret)
		})
	}
	_ = u
	_ = n1
}

func TestCloseLeavesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	before := goleak.IgnoreCurrent()
	m, err := hasql.New(ctx, withParams(c.DSN(), "application_name", "leakcheck", "hasql_check_interval", "50ms"), hasql.WithLogger(quiet))
	require.NoError(t, err)
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	for i := 0; i < 20; i++ {
		_, err := m.Master().Exec(ctx, "SELECT 1")
		require.NoError(t, err)
		_, err = m.Replica().Exec(ctx, "SELECT 1")
		require.NoError(t, err)
	}
	conn, err := c.Master().Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	count := func() int {
		var n int
		require.NoError(t, conn.QueryRow(ctx,
			"SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('leakcheck', 'pgxha-check')").Scan(&n))
		return n
	}
	require.Positive(t, count(), "the manager's connections show on the server")

	m.Close()
	m.Close() // idempotent
	goleak.VerifyNone(t, before)
	require.Eventually(t, func() bool { return count() == 0 }, 10*time.Second, 10*time.Millisecond,
		"no connection of the manager is left on the server")
	_, err = m.AcquireMaster(ctx)
	assert.ErrorIs(t, err, hasql.ErrClosed)
}

func TestWaitReadyExplains(t *testing.T) {
	m, err := hasql.New(t.Context(), "postgres://u:"+secret+"@127.0.0.1:1/db?sslmode=disable&hasql_check_interval=50ms", hasql.WithLogger(quiet))
	require.NoError(t, err)
	defer m.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err = m.WaitReady(ctx, 1, 0)
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "127.0.0.1:1 down")
	assert.NotContains(t, err.Error(), secret)
	assert.Error(t, m.WaitReady(ctx, 2, 0), "at most one master")
}

func TestCustomBalancer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	b := &lastBuilder{}
	m := newManager(t, ctx, c.DSN(), hasql.WithBalancer(b))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	for i := 0; i < 10; i++ {
		conn, err := m.AcquireReplica(ctx)
		require.NoError(t, err)
		assert.Equal(t, "n3", nodeOf(c, conn), "the custom picker picks the last candidate")
		conn.Release()
	}
	assert.Positive(t, b.builds.Load())
}

// lastBuilder picks the last candidate.
type lastBuilder struct{ builds atomic.Int64 }

func (b *lastBuilder) Name() string { return "last" }
func (b *lastBuilder) Build(nodes []balancer.Node) balancer.Picker {
	b.builds.Add(1)
	return lastPicker(len(nodes) - 1)
}

type lastPicker int

func (p lastPicker) Pick() int { return int(p) }

var _ = errors.New
var _ = fmt.Sprintf

func TestRoguePromotionSeen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	// The master runs well, so nothing probes the replica: its next check
	// (every second here) sees the promotion.
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "1s"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	changed := m.Changed()
	require.NoError(t, n2.Promote(ctx))
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("the promotion was not seen")
	}
	require.Eventually(t, func() bool { return roles(m)["n2"] == hasql.RoleMaster }, 5*time.Second, time.Millisecond)
	st := m.Nodes()
	assert.True(t, st[0].SplitBrain && st[1].SplitBrain, "both writable: a split brain, reported")
	assert.Equal(t, hasql.RoleStaleMaster, st[0].Role, "the old master, on the older timeline, gets no writes")
	assert.True(t, st[0].StaleMaster)
	assert.True(t, st[0].Writable)
	conn, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	assert.Equal(t, "n2", nodeOf(c, conn), "writes go to the newer timeline")
	conn.Release()
	_ = n1
}

func TestReadOnlyConnectionIsDestroyedOnRelease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1 := c.Nodes()[0]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "30s", "pool_min_idle_conns", "0"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	_, err := m.Master().Exec(ctx, "CREATE TABLE t (id int)")
	require.NoError(t, err)

	conn, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	// The master turns read-only under the connection's feet (as a demoted
	// node would refuse writes): its next write meets 25006.
	admin, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "ALTER SYSTEM SET default_transaction_read_only = on")
	require.NoError(t, err)
	_, err = admin.Exec(ctx, "SELECT pg_reload_conf()")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := conn.Exec(ctx, "INSERT INTO t VALUES (1)")
		return err != nil && strings.Contains(err.Error(), "25006")
	}, 10*time.Second, 10*time.Millisecond)
	pgConn := conn.Conn()
	conn.Release()
	assert.True(t, pgConn.IsClosed(), "the connection that met 25006 was closed, not returned to the pool")
	assert.Zero(t, m.Stat().Nodes[0].Pool.IdleConns, "nothing went back to the pool")

	// The error also had the node checked at once (the interval is 30s):
	// it is no longer master.
	require.Eventually(t, func() bool { return m.Nodes()[0].Role != hasql.RoleMaster }, 5*time.Second, 5*time.Millisecond)
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	_, err = m.AcquireMaster(short)
	assert.ErrorIs(t, err, hasql.ErrNoMaster, "a read-only primary is not a master")
}

// TestPromotedReadOnlyIsNotMaster: a promoted node that refuses writes
// (default_transaction_read_only) is not made master.
func TestPromotedReadOnlyIsNotMaster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "30s"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	admin, err := n2.Conn(ctx)
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "ALTER SYSTEM SET default_transaction_read_only = on")
	require.NoError(t, err)
	_, err = admin.Exec(ctx, "SELECT pg_reload_conf()")
	require.NoError(t, err)
	require.NoError(t, n1.Kill())
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, 10*time.Second, time.Millisecond)
	require.NoError(t, n2.Promote(ctx))
	// The check interval is 30s: only the watcher and the check it runs at
	// once see the promotion in time.
	require.Eventually(t, func() bool {
		st := m.Nodes()[1]
		return st.Up && !st.Role.IsReplica() && !st.Writable
	}, 10*time.Second, time.Millisecond, "the promotion is seen, and the node is read-only")
	assert.Equal(t, hasql.RoleUnknown, m.Nodes()[1].Role)
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	conn, err := m.AcquireMaster(short)
	if err == nil {
		conn.Release()
	}
	assert.ErrorIs(t, err, hasql.ErrNoMaster, "a promoted read-only node is not a master")
}
