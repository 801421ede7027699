package hasql_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// The connection string's one host is a name (rw.db) that reaches master
// n1. Replica n2 is promoted while n1 stays up, and takes a NOTIFY; the
// Listener, still on n1, has a marker come back after it. Then the name
// moves to n2, as a failover script moves it: the node's checks reach n2,
// the master's connections are cut, and the Listener listens again at the
// same address, on another server. The MissedError's window must contain
// the NOTIFY sent on n2 before, though the address is the same.
func TestListenMissedWindowWhenTheMastersNameMoves(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	a1, err := n1.AliasAt("127.0.0.51:0")
	require.NoError(t, err)
	port := portStr(a1)
	_, err = n2.AliasAt("127.0.0.52:" + port)
	require.NoError(t, err)
	var target atomic.Value
	target.Store("127.0.0.51")
	rw := "rw.db:" + port
	dsn := strings.Replace(c.DSN(), "@"+n1.Addr()+","+n2.Addr()+"/", "@"+rw+"/", 1)
	require.NotEqual(t, c.DSN(), dsn)
	m := managerResolvingWith(t, ctx, withParams(dsn, "hasql_check_interval", "100ms"), "rw.db",
		func() string { return target.Load().(string) }, nil)
	require.Eventually(t, func() bool {
		st := statusAtAddr(m, rw)
		return st.Role == hasql.RoleMaster && st.Name == "n1"
	}, 30*time.Second, 5*time.Millisecond, "rw.db never master on n1: %v", m.Nodes())
	receive := listenAfterFirst(t, ctx, m)

	require.NoError(t, n2.Promote(ctx))
	execOn(t, ctx, n2, "SELECT pg_notify('ev', 'early')")
	sent := time.Now()
	// A marker of the Listener's on n1 ends after 'early'.
	admin, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer admin.Close(context.Background())
	require.Eventually(t, func() bool {
		var n int
		err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pgxha.listener.%'
			AND state = 'idle' AND state_change > $1`, sent).Scan(&n)
		return err == nil && n > 0
	}, time.Minute, 10*time.Millisecond, "no marker of the Listener's ended on n1 after 'early'")

	target.Store("127.0.0.52")
	execOn(t, ctx, n1, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgxha-check'")

	missed, sawEarly := untilMissed(t, receive, "early")
	t.Logf("missed: %v", missed)
	require.False(t, sawEarly)
	require.Equal(t, missed.From, missed.To, "the Listener listens again at the same address")
	require.True(t, missed.Lost.Before(sent), "'early' (sent on n2 at %s, never received) is outside the window: %v", sent.Format(time.RFC3339Nano), missed)
}
