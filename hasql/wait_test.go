package hasql_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

func TestWaitReplayed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n3 := c.Nodes()[2]
	// Checks far apart: what the wait learns, it learns from the replicas.
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "10s", "hasql_watch_promotion", "false"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	// Every replica can read a table as soon as WaitCaughtUp returns, n3
	// too, though it applies each commit 200ms late.
	var replicas []*pgx.Conn
	for _, rn := range c.Replicas() {
		conn, err := rn.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close(ctx)
		replicas = append(replicas, conn)
	}
	_, err := replicas[1].Exec(ctx, "ALTER SYSTEM SET recovery_min_apply_delay = '200ms'")
	require.NoError(t, err)
	_, err = replicas[1].Exec(ctx, "SELECT pg_reload_conf()")
	require.NoError(t, err)
	for i := range 5 {
		_, err := m.Master().Exec(ctx, fmt.Sprintf("DROP TABLE IF EXISTS wait_replayed; CREATE TABLE wait_replayed (i int); INSERT INTO wait_replayed VALUES (%d)", i))
		require.NoError(t, err)
		require.NoError(t, m.WaitCaughtUp(ctx))
		for j, conn := range replicas {
			var got int
			err = conn.QueryRow(ctx, "SELECT i FROM wait_replayed").Scan(&got)
			require.NoError(t, err, "replica %d after WaitCaughtUp, round %d", j, i)
			assert.Equal(t, i, got)
		}
	}

	// A replica that does not replay holds the wait, which names it.
	require.NoError(t, n3.PauseReplay(ctx))
	_, err = replicas[1].Exec(ctx, "ALTER SYSTEM RESET recovery_min_apply_delay")
	require.NoError(t, err)
	_, err = replicas[1].Exec(ctx, "SELECT pg_reload_conf()")
	require.NoError(t, err)
	_, err = m.Master().Exec(ctx, "CREATE TABLE wait_paused (i int)")
	require.NoError(t, err)
	lsn, err := m.CurrentLSN(ctx)
	require.NoError(t, err)
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	err = m.WaitReplayed(short, lsn)
	cancelShort()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), n3.Addr(), "the replica behind is named")
	assert.NotContains(t, err.Error(), c.Nodes()[1].Addr(), "the replica that replayed is not")

	// Once it replays again the wait ends, and the table is there.
	waited := make(chan error, 1)
	go func() { waited <- m.WaitReplayed(ctx, lsn) }()
	require.NoError(t, n3.ResumeReplay(ctx))
	require.NoError(t, <-waited)
	conn, err := n3.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "SELECT * FROM wait_paused")
	require.NoError(t, err)

	// A closed Manager does not wait.
	m.Close()
	assert.ErrorIs(t, m.WaitReplayed(ctx, lsn+1<<40), hasql.ErrClosed)
}
