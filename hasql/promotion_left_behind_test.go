package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// n2 is promoted while n1 runs on and n3 keeps streaming n1's timeline 1.
// n2 (timeline 2) is master, n1 stale; n3 follows neither the master nor
// its timeline: detached, and no plain, SyncOnly or MaxLag read reaches it.
func TestReplicaStreamingTheOldTimelineAfterAPromotionServesNoReads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n2, n3 := c.Nodes()[1], c.Nodes()[2]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	_, err := m.Master().Exec(ctx, "CREATE TABLE notes (id int PRIMARY KEY)")
	require.NoError(t, err)

	require.NoError(t, n2.Promote(ctx))
	waitRole(t, m, "n2", hasql.RoleMaster)
	checkedSince(t, m, time.Now(), "n1", "n3")
	st := statusOf(m, "n3")
	t.Logf("n1 %s; n3 %s timeline %d detached %q", statusOf(m, "n1").Role, st.Role, st.Timeline, st.Detached)
	require.Equal(t, hasql.RoleDetached, st.Role)
	for _, opts := range [][]hasql.ReplicaOption{nil, {hasql.MaxLag(0, time.Second)}, {hasql.PreferSync()}} {
		for range 10 {
			short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
			var port string
			err := m.Replica(opts...).QueryRow(short, "SELECT current_setting('port')").Scan(&port)
			cancelShort()
			require.False(t, err == nil && port == portStr(n3.DirectAddr()), "a read reached n3, on the old timeline")
		}
	}
}
