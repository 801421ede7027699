package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
)

// The Manager loses sight of the master n1 (n2 sync, n3 async keep
// streaming from it). Then n2's walreceiver stops, the master makes n3
// its sync standby and acknowledges a commit n3 flushed. n2's checks show
// it streams from nobody, and no master is known to say what it is: it
// must not be called sync, and a SyncOnly read must not be served by it
// without the acknowledged commit.
func TestSyncOnlyWithoutAMasterSkipsAReplicaThatStoppedStreaming(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, m, p := syncClusterBehindACut(t, ctx)
	n1, n2 := c.Nodes()[0], c.Nodes()[1]

	p.cut() // the Manager no longer reaches n1
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, 30*time.Second, 5*time.Millisecond)
	stopReceiver(t, ctx, n2)
	execOn(t, ctx, n1, "ALTER SYSTEM SET synchronous_standby_names = 'n3'", "SELECT pg_reload_conf()")
	execOn(t, ctx, n1, "INSERT INTO notes VALUES (1)") // acknowledged once n3 flushed it
	checkedSince(t, m, time.Now(), "n2", "n3")

	st := statusOf(m, "n2")
	t.Logf("no master: n2 role %s sync_state %q sync unknown %q detached %q", st.Role, st.SyncState, st.SyncUnknown, st.Detached)

	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	var found int
	var port string
	err := m.Replica(hasql.SyncOnly()).QueryRow(short,
		"SELECT count(*), current_setting('port') FROM notes WHERE id = 1").Scan(&found, &port)
	servedByN2 := err == nil && port == portStr(n2.DirectAddr())
	t.Logf("SyncOnly read: found=%d served by n2=%v err=%v", found, servedByN2, err)
	require.False(t, err == nil && found == 0,
		"a SyncOnly read was served (by n2: %v) without a commit the master acknowledged; n2 (no walreceiver) reported as %s", servedByN2, st.Role)
	require.NotEqual(t, hasql.RoleSyncReplica, st.Role, "n2, streaming from nobody with no master known, is called sync")
}
