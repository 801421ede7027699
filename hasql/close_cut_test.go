//go:build linux

package hasql_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A DB() connection being opened to a master that hangs when the Manager
// closes is cut, and the caller, its own context alive, gets ErrClosed, as
// an acquire or Listen cut the same way does (it got the network's error).
func TestDBConnectCutByCloseIsErrClosed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1 := c.Nodes()[0]
	m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_timeout", "10s"), hasql.WithLogger(quiet))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	db := m.DB(hasql.TargetMaster)
	defer db.Close()

	require.NoError(t, n1.Pause())
	defer func() { require.NoError(t, n1.Resume()) }()
	callCtx, callCancel := context.WithTimeout(ctx, time.Minute)
	defer callCancel()
	got := make(chan error, 1)
	go func() {
		conn, err := db.Conn(callCtx)
		if conn != nil {
			conn.Close()
		}
		got <- err
	}()
	waitStack(t, 10*time.Second, "hasql.(*dbConnector).Connect", "pgconn.connectOne")
	closeWithin(t, m, time.Minute)
	select {
	case err := <-got:
		require.Error(t, err)
		t.Logf("db.Conn: %v (caller's ctx err: %v)", err, callCtx.Err())
		assert.ErrorIs(t, err, hasql.ErrClosed, "a DB connect cut by Close")
		assert.False(t, errors.Is(err, context.Canceled) && callCtx.Err() == nil, "context.Canceled while the caller's context is alive")
	case <-time.After(10 * time.Second):
		t.Fatal("db.Conn did not return after Close")
	}
}

// WaitReplayed asks a replica that hangs (SIGSTOP); the question is given
// up after CheckTimeout (1s here) and its connection cut at once: pgx
// drained it for up to 15 s, and Close waited in pgxpool's Close for that,
// whatever CheckTimeout said.
func TestCloseWithProbeOfHungReplicaInFlight(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n2 := c.Nodes()[1]
	// No check after the first ones: two checks of the hung replica that
	// time out put it down, out of the replicas WaitReplayed asks.
	m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_timeout", "1s", "hasql_check_interval", "1h"), hasql.WithLogger(quiet))
	require.NoError(t, err)
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	tok, err := m.Token(ctx)
	require.NoError(t, err)
	// The question goes out on a connection n2's pool holds: one it had to
	// make would wait in pgxpool's connect, in a goroutine of its own, and
	// never show the question on its way. The pool's first idle
	// connection comes in the background: on a busy machine it may not be
	// there yet.
	var one int
	require.NoError(t, m.Replica().QueryRow(ctx, "SELECT 1").Scan(&one))

	require.NoError(t, n2.Pause())
	defer func() { require.NoError(t, n2.Resume()) }()
	waitErr := make(chan error, 1)
	go func() { waitErr <- m.WaitReplayed(context.Background(), tok.LSN+1<<40) }()
	// The question to the hung replica is on its way (bounded by CheckTimeout).
	waitStack(t, 10*time.Second, "hasql.(*Manager).replayedOnConn", "pgconn.")
	took := closeWithin(t, m, time.Minute)
	t.Logf("Close took %s", took)
	select {
	case err := <-waitErr:
		t.Logf("WaitReplayed: %v", err)
		assert.ErrorIs(t, err, hasql.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Error("WaitReplayed did not return")
	}
	assert.Less(t, took, 10*time.Second, "Close waited for pgx's 15s drain of a probe connection to the hung replica")
}
