package failover_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
)

// A statement outside a transaction is its own COMMIT, and Classify calls
// a routed one lost with MayHaveRun CommitUnknown. The Manager's other
// routed API, m.DB(hasql.TargetMaster), runs the same autocommit write;
// its answer is lost after the server committed it: Classify must not
// call the error retryable.
func TestClassifyDBAutocommitWriteLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, m, n1, stop, restore := syncStoppableCluster(t, ctx, "CREATE TABLE db_t (n serial PRIMARY KEY)")
	db := m.DB(hasql.TargetMaster)
	defer db.Close()
	require.NoError(t, db.PingContext(ctx))
	stop()
	var killed atomic.Int32
	done := terminateSyncWaiters(t, ctx, n1, 1, &killed, restore)
	_, err := db.ExecContext(ctx, "INSERT INTO db_t DEFAULT VALUES")
	<-done
	require.Error(t, err)
	var k int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM db_t").Scan(&k))
	require.Equal(t, 1, k, "the insert committed")
	c := failover.Classify(err)
	t.Logf("db.ExecContext: %v; Classify %v (retryable %v)", err, c, c.Retryable())
	assert.False(t, c.Retryable(), "Classify calls a committed autocommit write %v", c)
}
