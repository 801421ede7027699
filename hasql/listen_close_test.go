package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestListenReturnsErrClosedWhenCloseCutsItsLISTEN: Listen has made its
// connection and sent its LISTEN (the answer delayed by a second of
// latency) when the Manager closes. Listen's outcomes are listening, ctx's
// error, or ErrClosed once the Manager closes: the LISTEN cut by Close
// reads as ErrClosed, not as a "context canceled" the caller would take
// for its own context's.
func TestListenReturnsErrClosedWhenCloseCutsItsLISTEN(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]
	cfg, err := hasql.ParseConfig(withParams(c.DSN(), "hasql_check_interval", "10m",
		"hasql_check_timeout", "5s", "pool_min_conns", "0"))
	require.NoError(t, err)
	cfg.Logger = quiet
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 0))

	direct, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer direct.Close(ctx)

	require.NoError(t, n1.SetLatency(time.Second))
	done := make(chan error, 1)
	go func() {
		l, err := m.Listen(ctx, "close_events")
		if l != nil {
			l.Close()
		}
		done <- err
	}()
	// The server ran the LISTEN: its answer is on its way back.
	require.Eventually(t, func() bool {
		var k int
		err := direct.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN "close_events";%'`).Scan(&k)
		require.NoError(t, err)
		return k > 0
	}, time.Minute, 2*time.Millisecond)
	m.Close()
	err = <-done
	require.ErrorIs(t, err, hasql.ErrClosed, "Listen cut by Close: %v", err)
}
