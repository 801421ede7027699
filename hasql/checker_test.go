package hasql_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/checker"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// countingChecker is the PostgreSQL checker, counting its calls per node
// (by port).
type countingChecker struct {
	mu     sync.Mutex
	checks map[uint16]int
}

func newCountingChecker() *countingChecker {
	return &countingChecker{checks: map[uint16]int{}}
}

func (c *countingChecker) Check(ctx context.Context, conn *pgx.Conn) (checker.Result, error) {
	c.mu.Lock()
	c.checks[conn.Config().Port]++
	c.mu.Unlock()
	return checker.PostgreSQL().Check(ctx, conn)
}

func (c *countingChecker) counts(port uint16) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks[port]
}

// plainChecker is a Checker and nothing more: no PromotionWatcher.
type plainChecker struct{ checker.Checker }

func portOf(t *testing.T, n *testcluster.Node) uint16 {
	t.Helper()
	cfg, err := pgx.ParseConfig(n.DSN())
	require.NoError(t, err)
	return cfg.Port
}

// lateMasterChecker holds the first check of the node on masterPort until
// every other node was checked once, so that the replicas are seen before
// their master.
type lateMasterChecker struct {
	checker.Checker
	masterPort uint16
	others     int
	mu         sync.Mutex
	seen       map[uint16]bool
	othersDone chan struct{}
}

func (c *lateMasterChecker) Check(ctx context.Context, conn *pgx.Conn) (checker.Result, error) {
	port := conn.Config().Port
	if port == c.masterPort {
		select {
		case <-c.othersDone:
		case <-ctx.Done():
		}
	}
	res, err := c.Checker.Check(ctx, conn)
	c.mu.Lock()
	if port != c.masterPort && !c.seen[port] {
		c.seen[port] = true
		if len(c.seen) == c.others {
			close(c.othersDone)
		}
	}
	c.mu.Unlock()
	return res, err
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestCheckers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})

	t.Run("start-up logs no role change at Info", func(t *testing.T) {
		// Replicas checked before their master are async until the master
		// says which is sync: that completes their first role, not a change.
		var logs syncBuffer
		lc := &lateMasterChecker{Checker: plainChecker{checker.PostgreSQL()}, masterPort: portOf(t, c.Nodes()[0]), others: 2,
			seen: map[uint16]bool{}, othersDone: make(chan struct{})}
		m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_timeout", "5s"), hasql.WithChecker(lc),
			hasql.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
		require.NoError(t, err)
		defer m.Close()
		require.Eventually(t, func() bool {
			st := m.Nodes()
			return st[0].Role == hasql.RoleMaster && st[1].Role == hasql.RoleSyncReplica && st[2].Role == hasql.RoleAsyncReplica
		}, time.Minute, 10*time.Millisecond)
		out := logs.String()
		assert.Contains(t, out, "from=replica to=sync", "n2 was first seen as a replica of unknown sync state, before its master (the test's premise)")
		assert.NotContains(t, out, "level=INFO", "start-up logs at Debug only:\n%s", out)
	})

	t.Run("between checks nothing runs on the servers", func(t *testing.T) {
		cc := newCountingChecker()
		m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "200ms"), hasql.WithChecker(cc))
		require.NoError(t, m.WaitReady(ctx, 1, 2))
		n2 := portOf(t, c.Nodes()[1])
		require.Eventually(t, func() bool { return cc.counts(n2) >= 10 }, time.Minute, 10*time.Millisecond)
		st := m.Nodes()
		assert.Equal(t, []hasql.Role{hasql.RoleMaster, hasql.RoleSyncReplica, hasql.RoleAsyncReplica},
			[]hasql.Role{st[0].Role, st[1].Role, st[2].Role})
		assert.Positive(t, st[1].CheckLatency)
		// The check connection of every node sits idle between its checks:
		// sampled many times, it is never seen running a statement.
		for _, n := range c.Nodes() {
			conn, err := n.Conn(ctx)
			require.NoError(t, err)
			active := 0
			for range 50 {
				var k int
				require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
					WHERE application_name = 'pgxha-check' AND state = 'active'`).Scan(&k))
				active += k
				time.Sleep(7 * time.Millisecond)
			}
			conn.Close(ctx)
			assert.LessOrEqual(t, active, 5, "%s: the check connection is idle between checks", n)
		}
	})

	t.Run("a plain Checker still sees a promotion at once", func(t *testing.T) {
		m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "30s"), hasql.WithChecker(plainChecker{checker.PostgreSQL()}))
		require.NoError(t, m.WaitReady(ctx, 1, 2))
		require.NoError(t, c.Nodes()[0].Kill())
		require.NoError(t, c.Nodes()[1].Promote(ctx))
		// Checks every 30s: the crash is seen on the master's socket, and
		// the replicas are probed for the promotion while there is no
		// master.
		require.Eventually(t, func() bool { return m.Stat().Master == c.Nodes()[1].Addr() }, 10*time.Second, time.Millisecond)
	})
}
