//go:build linux

package hasql_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A Listener behind PgBouncer in transaction mode: its LISTEN is made on
// one of PgBouncer's server connections, which goes back to PgBouncer's
// pool when the statement ends, and other clients' transactions then run
// on it. Every notification the master commits must reach Receive, or
// Receive must return a MissedError whose window holds it: none is lost
// in silence.
func TestListenBehindTransactionPoolerLosesNothingInSilence(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1, PgBouncer: testcluster.PgBouncerTransaction})
	m := newManager(t, ctx, withParams(c.DSN(), "default_query_exec_mode", "simple_protocol"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	l, err := m.Listen(ctx, "ev")
	require.NoError(t, err)
	defer l.Close()

	// Other clients of the same PgBouncer run short transactions, as an
	// application's pool does.
	lctx, lcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lctx.Err() == nil {
				conn, err := m.AcquireMaster(lctx)
				if err != nil {
					continue
				}
				_, _ = conn.Exec(lctx, "SELECT pg_sleep(0.01)")
				conn.Release()
			}
		}()
	}
	defer func() { lcancel(); wg.Wait() }()

	n1 := c.Nodes()[0]
	admin, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer admin.Close(context.Background())
	const sent = 20
	first := time.Now()
	for i := range sent {
		_, err := admin.Exec(ctx, fmt.Sprintf("NOTIFY ev, '%d'", i))
		require.NoError(t, err)
		time.Sleep(100 * time.Millisecond)
	}
	got := 0
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	for got < sent {
		nt, err := l.Receive(rctx)
		var missed *hasql.MissedError
		if errors.As(err, &missed) && !missed.Lost.After(first) {
			t.Logf("missed window covers them: %v", missed)
			return
		}
		if err != nil {
			t.Fatalf("%d of %d notifications received, then %v: the rest lost with no MissedError", got, sent, err)
		}
		if nt.Channel == "ev" {
			got++
		}
	}
}
