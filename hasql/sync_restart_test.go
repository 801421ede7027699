package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// The sync replica crashes and comes back. While it is down it has no
// sync state (the master may name another standby and acknowledge commits
// it never gets); once back, it is sync again as soon as the master lists
// its new walsender, and SyncOnly reads go to it.
func TestSyncReplicaCrashedIsSyncAgainOnceTheMasterListsIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n2 := c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	waitRole(t, m, "n2", hasql.RoleSyncReplica)

	require.NoError(t, n2.Kill())
	require.Eventually(t, func() bool { st := statusOf(m, "n2"); return !st.Role.IsReplica() && st.LastError != nil },
		30*time.Second, 5*time.Millisecond, "n2 never seen down: %v", m.Nodes())
	st := statusOf(m, "n2")
	assert.Empty(t, st.SyncState, "n2 down: the sync state the master gave it while it was up")

	require.NoError(t, n2.Start())
	waitRole(t, m, "n2", hasql.RoleSyncReplica)
	st = statusOf(m, "n2")
	assert.Equal(t, "sync", st.SyncState)
	assert.Empty(t, st.SyncUnknown)
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	conn, err := m.AcquireReplica(rctx, hasql.SyncOnly())
	require.NoError(t, err)
	defer conn.Release()
	var name string
	require.NoError(t, conn.QueryRow(rctx, "SELECT current_setting('cluster_name')").Scan(&name))
	assert.Equal(t, "n2", name)
}
