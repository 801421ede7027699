package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestAcquireWithoutDeadlineBoundedWhileConnecting: an AcquireMaster whose
// context has no deadline is bounded by hasql_acquire_timeout, and the
// bound covers "waiting for a connection from its pool" (Config.AcquireTimeout).
// The master hangs (stopped, its checks not failed yet: check timeout 20s);
// its pool keeps no idle connection (pool_min_idle_conns=0), so the acquire
// has to make one.
func TestAcquireWithoutDeadlineBoundedWhileConnecting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_acquire_timeout", "1s",
		"hasql_check_timeout", "20s", "hasql_check_interval", "500ms", "pool_min_idle_conns", "0"))
	require.NoError(t, m.WaitReady(ctx, 1, 0))

	require.NoError(t, n1.Pause())
	resumed := false
	defer func() {
		if !resumed {
			_ = n1.Resume()
		}
	}()
	type result struct {
		conn *pgxpool.Conn
		err  error
		took time.Duration
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		conn, err := m.AcquireMaster(context.Background())
		done <- result{conn, err, time.Since(start)}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		require.NoError(t, n1.Resume())
		resumed = true
		r = <-done
		if r.conn != nil {
			r.conn.Release()
		}
		t.Fatalf("AcquireMaster(context.Background()) with hasql_acquire_timeout=1s was still waiting 10s later (it returned after %s: %v)", r.took.Round(time.Millisecond), r.err)
	}
	if r.conn != nil {
		r.conn.Release()
	}
	t.Logf("AcquireMaster returned after %s: %v", r.took.Round(time.Millisecond), r.err)
	require.ErrorContains(t, r.err, "hasql_acquire_timeout", "the acquire ends on its bound, and says which")
}

// TestAcquireConnectingToHungMasterPicksTheNewMaster: an AcquireMaster
// that has to make a connection in the master's pool (pool_min_idle_conns=0)
// when the master hangs, and a replica is promoted: once the Manager names the new master,
// the acquire goes there, as one waiting in the master's full pool does
// (TestFullPoolWaitPicksAgain), instead of waiting out the old master's
// connect_timeout (hasql_acquire_timeout, 30s by default).
func TestAcquireConnectingToHungMasterPicksTheNewMaster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "hasql_check_timeout", "1s", "pool_min_idle_conns", "0"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	require.NoError(t, n1.Pause())
	defer func() { _ = n1.Resume() }()
	type result struct {
		node string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		actx, acancel := context.WithTimeout(ctx, time.Minute)
		defer acancel()
		conn, err := m.AcquireMaster(actx)
		r := result{err: err}
		if conn != nil {
			r.node = nodeOf(c, conn)
			conn.Release()
		}
		done <- r
	}()
	require.NoError(t, n2.Promote(ctx))
	waitRole(t, m, "n2", hasql.RoleMaster)
	named := time.Now()
	select {
	case r := <-done:
		t.Logf("AcquireMaster ended %s after n2 was named master: node %q, %v", time.Since(named).Round(time.Millisecond), r.node, r.err)
		require.NoError(t, r.err)
		require.Equal(t, "n2", r.node)
	case <-time.After(15 * time.Second):
		r := <-done
		t.Fatalf("AcquireMaster was still connecting to the hung n1 15s after the Manager named n2 master (it ended %s after: node %q, %v)",
			time.Since(named).Round(time.Millisecond), r.node, r.err)
	}
}
