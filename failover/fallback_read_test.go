package failover_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A read through the replica Querier that fell back to
// the master (FallbackToMaster, the only replica down) loses its session:
// a read, to run again (NodeDown), as the error table says; Classify
// called it CommitUnknown while every routed statement lost outside a
// transaction had Autocommit.
func TestClassifyReadFallenBackToTheMasterLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	tr := &stmtEndTracer{}
	m := tracedManager(t, ctx, c, tr)
	require.NoError(t, n2.Stop())
	require.Eventually(t, func() bool {
		var rec bool
		return m.Replica(hasql.FallbackToMaster()).QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec) == nil && !rec
	}, 60*time.Second, 20*time.Millisecond, "the replica Querier falls back to the master")

	var fired atomic.Bool
	hook := func(conn *pgx.Conn, sql string, err error) {
		if err == nil && sql == "SELECT 'app-fallback'" && fired.CompareAndSwap(false, true) {
			terminateAndWait(t, ctx, n1, conn.PgConn().PID())
		}
	}
	tr.hook.Store(&hook)
	rows, err := m.Replica(hasql.FallbackToMaster()).Query(ctx, "SELECT 'app-fallback'")
	if err == nil {
		for rows.Next() {
		}
		rows.Close()
		err = rows.Err()
	}
	if err == nil {
		var s string
		err = m.Replica(hasql.FallbackToMaster()).QueryRow(ctx, "SELECT 'app-fallback'").Scan(&s)
	}
	tr.hook.Store(nil)
	t.Logf("fired %v; read: %v; Classify %v", fired.Load(), err, failover.Classify(err))
	require.True(t, fired.Load())
	require.Error(t, err)
	assert.True(t, failover.Classify(err).Retryable(), "a read on the replica Querier, classified %v", failover.Classify(err))
}
