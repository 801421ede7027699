package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// n3 restarts with no primary_conninfo while n1 takes writes: it comes
// back in recovery, streaming from nobody, and must come back detached,
// serving no read.
func TestReplicaRestartedWithoutUpstreamComesBackDetached(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n3 := c.Nodes()[2]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	_, err := m.Master().Exec(ctx, "CREATE TABLE notes (id int PRIMARY KEY)")
	require.NoError(t, err)
	execOn(t, ctx, n3, "ALTER SYSTEM SET primary_conninfo = ''")
	require.NoError(t, n3.Stop())
	_, err = m.Master().Exec(ctx, "INSERT INTO notes VALUES (1)")
	require.NoError(t, err)
	require.NoError(t, n3.Start())
	require.Eventually(t, func() bool {
		st := statusOf(m, "n3")
		return st.Up && st.LastCheck.After(time.Now().Add(-50*time.Millisecond))
	},
		30*time.Second, 5*time.Millisecond)
	seen := map[hasql.Role]int{}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		st := statusOf(m, "n3")
		if st.Up {
			seen[st.Role]++
		}
		short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
		var found int
		var port string
		err := m.Replica().QueryRow(short, "SELECT count(*), current_setting('port') FROM notes WHERE id = 1").Scan(&found, &port)
		cancelShort()
		require.False(t, err == nil && found == 0, "a read served on port %s (n3 %s) without the row", port, portStr(n3.DirectAddr()))
	}
	t.Logf("n3's roles once up: %v; now %+v", seen, statusOf(m, "n3").Detached)
	require.Equal(t, hasql.RoleDetached, statusOf(m, "n3").Role)
}
