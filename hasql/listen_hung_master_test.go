package hasql_test

import (
	"bytes"
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// unansweredListen is a network connection whose LISTEN never reaches the
// server: the server never answers it, as a master that stops answering
// right after a connection was made.
type unansweredListen struct {
	net.Conn
	swallowed *atomic.Bool
}

func (c unansweredListen) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte(`LISTEN "`)) {
		c.swallowed.Store(true)
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// TestListenWithoutDeadlineEndsWhenTheMasterIsGone: Listen with a context
// without a deadline, whose LISTEN the master never answers (it stopped
// answering right after the connect). Once the checks find the master down
// there is no master: Listen is documented to return "with ctx's error
// while there is no master (bounded by Config.AcquireTimeout when ctx has
// no deadline)".
func TestListenWithoutDeadlineEndsWhenTheMasterIsGone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]
	cfg, err := hasql.ParseConfig(withParams(c.DSN(), "hasql_acquire_timeout", "1s",
		"hasql_check_interval", "200ms", "hasql_check_timeout", "1s"))
	require.NoError(t, err)
	cfg.Logger = quiet
	var swallowed atomic.Bool
	cfg.ConfigureNode = func(_ hasql.NodeConfig, pc *pgxpool.Config) error {
		dial := pc.ConnConfig.DialFunc
		if dial == nil {
			var d net.Dialer
			dial = d.DialContext
		}
		pc.ConnConfig.DialFunc = pgconn.DialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return unansweredListen{Conn: conn, swallowed: &swallowed}, nil
		})
		return nil
	}
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, 0))

	done := make(chan error, 1)
	go func() {
		l, err := m.Listen(context.Background(), "jobs")
		if err == nil {
			l.Close()
		}
		done <- err
	}()
	waitUntil(t, ctx, "the LISTEN is sent", swallowed.Load)

	require.NoError(t, n1.Pause())
	defer func() { _ = n1.Resume() }()
	require.Eventually(t, func() bool { return !statusOf(m, "n1").Up }, 30*time.Second, 10*time.Millisecond)
	down := time.Now()
	select {
	case err := <-done:
		t.Logf("Listen ended %s after the master was seen down: %v", time.Since(down).Round(time.Millisecond), err)
		require.Error(t, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("Listen(context.Background()) with hasql_acquire_timeout=1s was still waiting 20s after the Manager saw the master down (no master since)")
	}
}
