package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// n3 cascades from n2; n2 hangs (SIGSTOP) while n1 takes writes. n3,
// cut off from the master, must not serve reads once the Manager finds
// n2 down, and never under a lag limit once it misses a commit older than
// the limit.
func TestCascadeWhoseUpstreamHangsServesNoReads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	setConninfo(t, ctx, n3, "host=127.0.0.1 port="+portStr(n2.DirectAddr())+" user=postgres password=pgxha application_name=n3")
	require.Eventually(t, func() bool {
		conn, err := n2.Conn(ctx)
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		var k int
		return conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'n3' AND state = 'streaming'").Scan(&k) == nil && k == 1
	}, 30*time.Second, 20*time.Millisecond, "n3 streams from n2")
	execOn(t, ctx, n1, "CREATE TABLE notes (id int PRIMARY KEY)")

	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	require.Eventually(t, func() bool { return statusOf(m, "n3").Role.IsReplica() }, 30*time.Second, 5*time.Millisecond, "n3 attached: %+v", statusOf(m, "n3"))

	require.NoError(t, n2.Pause())
	defer n2.Resume()
	_, err := m.Master().Exec(ctx, "INSERT INTO notes VALUES (1)")
	require.NoError(t, err)
	committed := time.Now()
	require.Eventually(t, func() bool { return !statusOf(m, "n2").Up }, 30*time.Second, 5*time.Millisecond, "n2 found down")
	checkedSince(t, m, time.Now(), "n3")
	st := statusOf(m, "n3")
	t.Logf("n2 down: n3 role %s detached %q lag %v known %v (commit %v ago)", st.Role, st.Detached, st.Lag, st.LagKnown, time.Since(committed).Round(time.Millisecond))
	require.Equal(t, hasql.RoleDetached, st.Role, "n3 streams from a hung n2 that is down in the Manager's view")

	var found int
	var inRecovery bool
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	err = m.Replica(hasql.MaxLag(0, 500*time.Millisecond)).QueryRow(short, "SELECT count(*), pg_is_in_recovery() FROM notes WHERE id = 1").Scan(&found, &inRecovery)
	t.Logf("MaxLag(500ms) read: found=%d in_recovery=%v err=%v", found, inRecovery, err)
	require.False(t, err == nil && found == 0, "a read under MaxLag(500ms) missed a commit %v old", time.Since(committed))
}
