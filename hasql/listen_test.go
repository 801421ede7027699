package hasql_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

func TestListenFollowsTheMaster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	before := goleak.IgnoreCurrent()
	m, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(quiet))
	require.NoError(t, err)
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	_, err = m.Listen(ctx)
	require.Error(t, err, "no channel")
	l, err := m.Listen(ctx, "orders", "Mixed Case")
	require.NoError(t, err)

	notify := func(ch, payload string) {
		t.Helper()
		_, err := m.Master().Exec(ctx, "SELECT pg_notify($1, $2)", ch, payload)
		require.NoError(t, err)
	}
	receive := func() (*hasql.Notification, error) {
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		defer rcancel()
		return l.Receive(rctx)
	}
	notify("orders", "1")
	notify("Mixed Case", "2")
	got, err := receive()
	require.NoError(t, err)
	assert.Equal(t, "orders", got.Channel)
	assert.Equal(t, "1", got.Payload)
	assert.Equal(t, n1.Addr(), got.Node)
	got, err = receive()
	require.NoError(t, err)
	assert.Equal(t, "Mixed Case", got.Channel)

	require.NoError(t, n1.Kill())
	require.NoError(t, c.Failover(ctx, n2))
	_, err = receive()
	require.ErrorIs(t, err, hasql.ErrMissed, "the switch is reported")
	var missed *hasql.MissedError
	require.ErrorAs(t, err, &missed)
	assert.Equal(t, n1.Addr(), missed.From)
	assert.Equal(t, n2.Addr(), missed.To)
	assert.False(t, missed.Resumed.Before(missed.Lost))

	notify("orders", "3")
	got, err = receive()
	require.NoError(t, err)
	assert.Equal(t, "3", got.Payload)
	assert.Equal(t, n2.Addr(), got.Node, "notifications now come from the new master")

	// Close on the Listener, then the Manager's Close stops everything.
	l.Close()
	_, err = l.Receive(ctx)
	assert.ErrorIs(t, err, hasql.ErrClosed)
	l2, err := m.Listen(ctx, "orders")
	require.NoError(t, err)
	m.Close()
	_, err = l2.Receive(ctx)
	assert.True(t, errors.Is(err, hasql.ErrClosed))
	// Failover may rewind and restart a replica that replayed past the
	// fork (under load): its process and proxy are the cluster's.
	goleak.VerifyNone(t, append(append(ignoreProxies, ignoreRejoined...), before)...)
}

// ignoreRejoined ignores the goroutines of nodes a testcluster started
// during the test (Failover rejoins a killed master, or rewinds and
// restarts a replica) and of their proxies: the cluster's, stopped with it.
var ignoreRejoined = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/pgxha/pgxha/testcluster.(*localNode).startLocked.func1"),
	goleak.IgnoreAnyFunction("github.com/pgxha/pgxha/testcluster/internal/faultproxy.(*Proxy).acceptLoop"),
}

// ignoreProxies skips the goroutines of testcluster's fault proxies, which
// carry the replicas' new replication connections after a failover: they
// are the cluster's, not the manager's.
var ignoreProxies = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/pgxha/pgxha/testcluster/internal/faultproxy.(*conn).read"),
	goleak.IgnoreAnyFunction("github.com/pgxha/pgxha/testcluster/internal/faultproxy.(*conn).write"),
	goleak.IgnoreAnyFunction("github.com/pgxha/pgxha/testcluster/internal/faultproxy.(*conn).run"),
}
