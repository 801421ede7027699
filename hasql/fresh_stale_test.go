//go:build linux

package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// n2 is promoted while n1 runs on (a failover that did not fence the old
// master); n3 is repointed to n2 with a reload, as Patroni does it, and
// replays a write acknowledged on timeline 2; n1 goes on writing on
// timeline 1, past n3's position; then n2 dies. A Manager started now sees
// n3 with no walreceiver, its control data still on timeline 1 (the
// settings keep its restartpoint away), and behind n1 by position: only
// the history file of timeline 2 in n3's pg_wal proves the newer timeline.
// n1 took the writes: the write of timeline 2 was lost for good.
func TestFreshManagerSeesTheTimelineAReplicaFollowed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 0,
		Settings: map[string]string{"bgwriter_lru_maxpages": "0", "checkpoint_timeout": "1h"}})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	_, first, err := m.Master().ExecToken(ctx, "CREATE TABLE notes (id int PRIMARY KEY)")
	require.NoError(t, err)
	replayedOn(t, ctx, n2, first.LSN)
	replayedOn(t, ctx, n3, first.LSN)

	require.NoError(t, n2.Promote(ctx)) // n1 runs on
	streamFrom(t, ctx, n3, conninfoOf(t, ctx, n3), n1, n2)

	conn2, err := n2.Conn(ctx)
	require.NoError(t, err)
	var acked string
	require.NoError(t, conn2.QueryRow(ctx, "INSERT INTO notes VALUES (2) RETURNING pg_current_wal_insert_lsn()::text").Scan(&acked))
	conn2.Close(ctx)
	lsn, err := hasql.ParseLSN(acked)
	require.NoError(t, err)
	replayedOn(t, ctx, n3, lsn)

	// n1 writes on, on timeline 1, past n3's position.
	execOn(t, ctx, n1, "SET synchronous_commit = local", "CREATE TABLE ahead AS SELECT g FROM generate_series(1, 20000) g")
	require.NoError(t, n2.Kill())

	fresh := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.Eventually(t, func() bool {
		return !statusOf(fresh, "n1").LastCheck.IsZero() && !statusOf(fresh, "n3").LastCheck.IsZero()
	}, 30*time.Second, 10*time.Millisecond)
	t.Logf("n3 in the new Manager: %+v", statusOf(fresh, "n3"))
	require.Eventually(t, func() bool { return statusOf(fresh, "n1").Role == hasql.RoleStaleMaster },
		30*time.Second, 10*time.Millisecond, "n1, on timeline 1 while n3 holds timeline 2's history: %+v", fresh.Nodes())
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = fresh.AcquireMaster(short)
	cancelShort()
	require.ErrorIs(t, err, hasql.ErrStaleMaster)
}
