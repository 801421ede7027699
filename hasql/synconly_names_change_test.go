package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// synchronous_standby_names goes FIRST 1 (n2) -> ANY 1 (n2, n3) -> ” ->
// FIRST 1 (n3) with a reload each time: once the Manager shows each, a
// SyncOnly read reaches only a replica the master lists as sync.
func TestSyncOnlyFollowsSynchronousStandbyNamesChanges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n3 := c.Nodes()[0], c.Nodes()[2]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	waitRole(t, m, "n2", hasql.RoleSyncReplica)

	read := func(what string) (string, error) {
		short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancelShort()
		var port string
		err := m.Replica(hasql.SyncOnly()).QueryRow(short, "SELECT current_setting('port')").Scan(&port)
		return port, err
	}
	for _, step := range []struct {
		names  string
		n2, n3 hasql.Role
	}{
		{"ANY 1 (n2, n3)", hasql.RoleQuorumReplica, hasql.RoleQuorumReplica},
		{"", hasql.RoleAsyncReplica, hasql.RoleAsyncReplica},
		{"FIRST 1 (n3)", hasql.RoleAsyncReplica, hasql.RoleSyncReplica},
	} {
		execOn(t, ctx, n1, "ALTER SYSTEM SET synchronous_standby_names = '"+step.names+"'", "SELECT pg_reload_conf()")
		waitRole(t, m, "n2", step.n2)
		waitRole(t, m, "n3", step.n3)
		for range 5 {
			port, err := read(step.names)
			if step.n3 == hasql.RoleSyncReplica {
				require.NoError(t, err, step.names)
				require.Equal(t, portStr(n3.DirectAddr()), port, step.names)
			} else {
				require.Error(t, err, "%q: a SyncOnly read served on port %s", step.names, port)
			}
		}
		t.Logf("%q: n2 %s, n3 %s", step.names, statusOf(m, "n2").Role, statusOf(m, "n3").Role)
	}
}
