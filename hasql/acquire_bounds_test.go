package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestAcquireFrozenMasterIsBounded: an acquire whose context has no
// deadline is bounded by hasql_acquire_timeout also inside the node's pool.
// The master freezes (SIGSTOP) or is cut off while its pool holds an idle
// connection that pgxpool pings before handing it out: the ping used the
// acquire's context and never ended, for as long as the master stayed
// frozen, though the Manager had seen it down. The ping is now bounded by
// CheckTimeout and a connection being made by AcquireTimeout (when
// connect_timeout is not set).
func TestAcquireFrozenMasterIsBounded(t *testing.T) {
	t.Run("pause", func(t *testing.T) { acquireFrozenMaster(t, (*testcluster.Node).Pause, (*testcluster.Node).Resume) })
	t.Run("partition", func(t *testing.T) { acquireFrozenMaster(t, (*testcluster.Node).Partition, (*testcluster.Node).Heal) })
}

func acquireFrozenMaster(t *testing.T, freeze, thaw func(*testcluster.Node) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]
	cfg, err := hasql.ParseConfig(withParams(c.DSN(), "hasql_acquire_timeout", "500ms",
		"hasql_check_interval", "200ms", "hasql_check_timeout", "500ms", "pool_max_conns", "2"))
	require.NoError(t, err)
	cfg.ConfigureNode = func(_ hasql.NodeConfig, pc *pgxpool.Config) error {
		// Every pooled connection is pinged before it is handed out (as
		// pgxpool does with one idle for over a second).
		pc.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
		return nil
	}
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	_, err = m.Master().Exec(ctx, "SELECT 1")
	require.NoError(t, err)

	require.NoError(t, freeze(n1))
	defer func() { _ = thaw(n1) }()
	frozen := time.Now()

	done := make(chan error, 1)
	go func() {
		conn, err := m.AcquireMaster(context.Background()) // a net/http handler's context
		if err == nil {
			conn.Release()
		}
		done <- err
	}()
	require.Eventually(t, func() bool { return !statusOf(m, "n1").Up }, 30*time.Second, 10*time.Millisecond)
	select {
	case err := <-done:
		// No master (the wait for one bounded), or the failed connect
		// (every candidate failed).
		t.Logf("the acquire ended %s after the freeze: %v", time.Since(frozen).Round(time.Millisecond), err)
		assert.Error(t, err)
	case <-time.After(20 * time.Second):
		require.NoError(t, thaw(n1))
		t.Fatalf("AcquireMaster(context.Background()) with hasql_acquire_timeout=500ms still waiting 20s after the Manager saw the frozen master down: %v", <-done)
	}
}

// TestFullPoolWaitPicksAgain: an acquire that waits in the master's full
// pool (every connection held by another caller) picks again when the
// node loses its role: it stayed in the dead node's pool until its own
// deadline while n2 took the writes. (A wait in a full pool ended only when
// the node left the set.)
func TestFullPoolWaitPicksAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "pool_max_conns", "1"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	held, err := m.AcquireMaster(ctx) // a handler that holds its connection (a transaction open across a slow call)
	require.NoError(t, err)
	defer held.Release()
	require.Equal(t, "n1", nodeOf(c, held))

	done := make(chan error, 1)
	go func() {
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		defer wcancel()
		_, err := m.Master().Exec(wctx, "SELECT 1")
		done <- err
	}()
	require.NoError(t, n1.Kill())
	require.NoError(t, n2.Promote(ctx))
	waitRole(t, m, "n2", hasql.RoleMaster)
	select {
	case err := <-done:
		assert.NoError(t, err, "the statement that waited in n1's full pool runs on n2")
	case <-time.After(30 * time.Second):
		t.Fatalf("the statement waiting in n1's full pool was still waiting 30s after the Manager made n2 master: %v", <-done)
	}
}
