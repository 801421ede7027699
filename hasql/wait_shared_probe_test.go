package hasql_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// Many callers waiting at once for a replica to replay share one question
// to it at a time: the waits take one connection of the replica's pool, not
// one each, and leave the application's reads the rest. Every waiter still
// returns once the replica replays the position.
func TestWaitReplayedWaitersShareOneProbe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n2 := c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "10s", "pool_max_conns", "8"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	require.NoError(t, n2.PauseReplay(ctx))
	_, err := m.Master().Exec(ctx, "CREATE TABLE wait_shared (i int)")
	require.NoError(t, err)
	lsn, err := m.CurrentLSN(ctx)
	require.NoError(t, err)

	replicaStat := func() hasql.NodeStat {
		for _, ns := range m.Stat().Nodes {
			if ns.Addr == n2.Addr() {
				return ns
			}
		}
		t.Fatalf("no stat for %s", n2.Addr())
		return hasql.NodeStat{}
	}
	before := replicaStat()

	const waiters = 16
	done := make(chan error, waiters)
	for range waiters {
		go func() { done <- m.WaitReplayed(ctx, lsn) }()
	}
	// The waiters ask the replica over and over while it does not replay.
	require.Eventually(t, func() bool { return replicaStat().Pool.AcquireCount >= before.Pool.AcquireCount+4*waiters },
		time.Minute, 5*time.Millisecond, "the waiters do not ask the replica")
	after := replicaStat()
	require.LessOrEqual(t, after.Pool.TotalConns, max(before.Pool.TotalConns, 1),
		"%d waiters opened %d connections of the replica's pool (%d before): each asked on its own", waiters, after.Pool.TotalConns, before.Pool.TotalConns)

	require.NoError(t, n2.ResumeReplay(ctx))
	for range waiters {
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-ctx.Done():
			t.Fatal(errors.New("a waiter did not return once the replica replayed"))
		}
	}
}
