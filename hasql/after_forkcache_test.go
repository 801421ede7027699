//go:build linux

package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A second failure after the first, without a shared WAL archive: n1 (timeline
// 1) dies; n3, which replayed the write W, is promoted (timeline 2, forked
// after W); a read after W's token resolves against n3's 00000002.history
// and caches it. n3 dies too. n2, whose walreceiver had stopped before W (it
// never talked to n3, so it has no 00000002.history), is promoted by the
// operator: PostgreSQL picks timeline 2 again (newest history file + 1),
// forked before W. W is lost: the token must fail with ErrWriteLost
// ("a write lost in a failover is reported, not waited for"). The Manager
// reuses the cached history of n3's timeline 2 ("a history file never
// changes once its timeline exists") and served the read from n2 without W:
// what was read is now forgotten when the master changes. (A token taken
// on n3's timeline 2 would still be taken for one of n2's: documented.)
func TestDuplicateTimelineNumberForkPointReadAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 0})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	_, created, err := m.Master().ExecToken(ctx, "CREATE TABLE notes (id int PRIMARY KEY)")
	require.NoError(t, err)
	replayedOn(t, ctx, n2, created.LSN)
	replayedOn(t, ctx, n3, created.LSN)

	stopReceiver(t, ctx, n2)
	_, w, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (1)")
	require.NoError(t, err)
	replayedOn(t, ctx, n3, w.LSN)

	require.NoError(t, n1.Kill())
	require.NoError(t, n3.Promote(ctx))
	waitRole(t, m, "n3", hasql.RoleMaster)
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	found, _, err := readAfter(rctx, m, w, "notes", 1)
	rcancel()
	require.NoError(t, err)
	require.Equal(t, 1, found, "n3 has W")

	require.NoError(t, n3.Kill())
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, n2.Promote(ctx))
	conn, err := n2.Conn(ctx)
	require.NoError(t, err)
	var tl int
	require.NoError(t, conn.QueryRow(ctx, timelineSQL).Scan(&tl))
	var hist string
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_read_file('pg_wal/00000002.history')").Scan(&hist))
	conn.Close(ctx)
	t.Logf("n2 promoted on timeline %d; its 00000002.history: %q; W's token %s", tl, hist, w)
	require.Equal(t, 2, tl, "a second timeline 2")
	waitRole(t, m, "n2", hasql.RoleMaster)

	fresh := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, fresh.WaitReady(ctx, 1, 0))
	for name, mm := range map[string]*hasql.Manager{"fresh": fresh, "the Manager that saw n3": m} {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		found, onReplica, err := readAfter(rctx, mm, w, "notes", 1)
		rcancel()
		t.Logf("%s: read after W's token: found=%d onReplica=%v err=%v", name, found, onReplica, err)
		assert.ErrorIs(t, err, hasql.ErrWriteLost, "%s: W (timeline 1, %s) is not on n2's timeline 2; found=%d", name, w.LSN, found)
	}
}
