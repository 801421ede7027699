package failover_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// OnMasterChange returns when the Manager closes: Changed is closed for
// good then, and the loop woke at once for ever (a core spent until the
// caller's context ended).
func TestOnMasterChangeEndsWithClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(testLogger(t)))
	require.NoError(t, err)
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	first := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		failover.OnMasterChange(ctx, m, func(addr string) {
			select {
			case first <- addr:
			default:
			}
		})
	}()
	require.Equal(t, c.Nodes()[0].Addr(), <-first)
	m.Close()
	require.True(t, m.Closed())
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("OnMasterChange goes on after Close")
	}
}
