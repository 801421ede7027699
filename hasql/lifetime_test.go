package hasql_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestConnLifetime: pool_max_conn_lifetime, which the node keeps instead of
// pgxpool, closes an idle connection past its end, closes one in use when
// it is released and not before (a transaction across the end commits),
// and an acquire never takes a connection past its end.
func TestConnLifetime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]

	t.Run("idle and in use", func(t *testing.T) {
		m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms",
			"pool_max_conn_lifetime", "1s", "pool_max_conns", "4"))
		_, err := m.Master().Exec(ctx, "CREATE TABLE lifetime (v int)")
		require.NoError(t, err)

		held, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		heldPID := int(held.Conn().PgConn().PID())
		tx, err := held.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, "INSERT INTO lifetime VALUES (1)")
		require.NoError(t, err)

		idle, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		idlePID := int(idle.Conn().PgConn().PID())
		require.NotEqual(t, heldPID, idlePID)
		idle.Release()

		// The idle one is closed by the node once its end has come; the
		// one in use is past its end by then (made first) and stays open.
		waitGone(t, ctx, n1, []int{idlePID})
		waitUntil(t, ctx, "the connection in use marked past its end", func() bool { return hasql.ExpiredConns(m) >= 1 })
		assert.Contains(t, backendPids(t, ctx, n1, "true"), heldPID)
		_, err = tx.Exec(ctx, "INSERT INTO lifetime VALUES (2)")
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
		held.Release()

		waitGone(t, ctx, n1, []int{heldPID})
		waitUntil(t, ctx, "no connection left past its end", func() bool { return hasql.ExpiredConns(m) == 0 })
		assert.EqualValues(t, 2, rowsOn(t, ctx, n1, "SELECT count(*) FROM lifetime"))
		conn, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		pid := int(conn.Conn().PgConn().PID())
		conn.Release()
		assert.False(t, slices.Contains([]int{heldPID, idlePID}, pid), "handed out %d, closed for its lifetime", pid)
		assert.Zero(t, hasql.InUse(m)[n1.Addr()], "in-use count after the sweep")
	})

	t.Run("an acquire skips a connection past its end", func(t *testing.T) {
		m := newManager(t, ctx, withParams(c.DSN(), "pool_max_conns", "4"))
		conn, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		old := int(conn.Conn().PgConn().PID())
		conn.Release()
		// Marked but still idle in the pool, as between a check that
		// found its end and the sweep that closes it.
		require.Equal(t, 1, hasql.EndAllConns(m))
		conn, err = m.AcquireMaster(ctx)
		require.NoError(t, err)
		pid := int(conn.Conn().PgConn().PID())
		var one int
		require.NoError(t, conn.QueryRow(ctx, "SELECT 1").Scan(&one))
		conn.Release()
		assert.NotEqual(t, old, pid, "the connection past its end was handed out")
		waitGone(t, ctx, n1, []int{old})
		waitUntil(t, ctx, "no connection left past its end", func() bool { return hasql.ExpiredConns(m) == 0 })
		assert.Zero(t, hasql.InUse(m)[n1.Addr()], "in-use count")
	})
}
