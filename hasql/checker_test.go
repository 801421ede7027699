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
	mu              sync.Mutex
	checks, watches map[uint16]int
}

func newCountingChecker() *countingChecker {
	return &countingChecker{checks: map[uint16]int{}, watches: map[uint16]int{}}
}

func (c *countingChecker) Check(ctx context.Context, conn *pgx.Conn) (checker.Result, error) {
	c.mu.Lock()
	c.checks[conn.Config().Port]++
	c.mu.Unlock()
	return checker.PostgreSQL().Check(ctx, conn)
}

func (c *countingChecker) WatchAndCheck(ctx context.Context, conn *pgx.Conn, wait, poll time.Duration) (checker.Watch, error) {
	c.mu.Lock()
	c.watches[conn.Config().Port]++
	c.mu.Unlock()
	return checker.PostgreSQL().(checker.PromotionWatcher).WatchAndCheck(ctx, conn, wait, poll)
}

func (c *countingChecker) counts(port uint16) (checks, watches int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks[port], c.watches[port]
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

	t.Run("a PromotionWatcher checks replicas as its waits end", func(t *testing.T) {
		cc := newCountingChecker()
		m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "200ms"), hasql.WithChecker(cc))
		require.NoError(t, m.WaitReady(ctx, 1, 2))
		n2 := portOf(t, c.Nodes()[1])
		require.Eventually(t, func() bool { _, w := cc.counts(n2); return w >= 10 }, time.Minute, 10*time.Millisecond)
		checks, watches := cc.counts(n2)
		assert.LessOrEqual(t, checks, 2, "after the first check, the replica is checked by the watcher (%d watches)", watches)
		checks, watches = cc.counts(portOf(t, c.Nodes()[0]))
		assert.Zero(t, watches, "the master is not watched for a promotion")
		assert.GreaterOrEqual(t, checks, 5, "the master is checked every interval")
		st := m.Nodes()
		assert.Equal(t, []hasql.Role{hasql.RoleMaster, hasql.RoleSyncReplica, hasql.RoleAsyncReplica},
			[]hasql.Role{st[0].Role, st[1].Role, st[2].Role}, "roles and sync state come through the watcher's checks")
		assert.Positive(t, st[1].CheckLatency)
		assert.Less(t, st[1].CheckLatency, 200*time.Millisecond, "the check latency does not count the 200ms wait")
	})

	t.Run("a plain Checker still sees a promotion at once", func(t *testing.T) {
		m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "30s"), hasql.WithChecker(plainChecker{checker.PostgreSQL()}))
		require.NoError(t, m.WaitReady(ctx, 1, 2))
		require.NoError(t, c.Nodes()[0].Kill())
		require.NoError(t, c.Nodes()[1].Promote(ctx))
		// Checks every 30s: only the watcher sees the promotion in time.
		require.Eventually(t, func() bool { return m.Stat().Master == c.Nodes()[1].Addr() }, 10*time.Second, time.Millisecond)
	})
}
