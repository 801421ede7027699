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

func TestDatabaseSQL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, c.DSN())
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	writes := m.DB(hasql.TargetMaster)
	defer writes.Close()
	reads := m.DB(hasql.TargetReplica, hasql.SyncOnly())
	defer reads.Close()

	_, err := writes.ExecContext(ctx, "CREATE TABLE notes (id serial PRIMARY KEY, body text)")
	require.NoError(t, err)
	_, err = writes.ExecContext(ctx, "INSERT INTO notes (body) VALUES ($1)", "hello")
	require.NoError(t, err)

	var inRecovery bool
	var name string
	require.NoError(t, writes.QueryRowContext(ctx, "SELECT pg_is_in_recovery(), current_setting('cluster_name')").Scan(&inRecovery, &name))
	assert.False(t, inRecovery)
	assert.Equal(t, "n1", name)
	for i := 0; i < 10; i++ {
		require.NoError(t, reads.QueryRowContext(ctx, "SELECT pg_is_in_recovery(), current_setting('cluster_name')").Scan(&inRecovery, &name))
		assert.True(t, inRecovery)
		assert.Equal(t, "n2", name, "SyncOnly reaches the sync replica")
	}
	require.Eventually(t, func() bool {
		var body string
		return reads.QueryRowContext(ctx, "SELECT body FROM notes WHERE id = 1").Scan(&body) == nil && body == "hello"
	}, 10*time.Second, 10*time.Millisecond)

	// After a failover the same *sql.DB writes to the new master: the
	// connections to the old one are discarded.
	require.NoError(t, n1.Kill())
	require.NoError(t, c.Failover(ctx, n2))
	require.Eventually(t, func() bool {
		_, err := writes.ExecContext(ctx, "INSERT INTO notes (body) VALUES ('after')")
		return err == nil
	}, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, writes.QueryRowContext(ctx, "SELECT current_setting('cluster_name')").Scan(&name))
	assert.Equal(t, "n2", name)

	def := m.DB(hasql.TargetDefault) // target_session_attrs unset: the master
	defer def.Close()
	require.NoError(t, def.QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery))
	assert.False(t, inRecovery)

	standby := newManager(t, ctx, withParams(c.DSN(), "target_session_attrs", "standby"))
	require.NoError(t, standby.WaitReady(ctx, 1, 1))
	sdb := standby.DB(hasql.TargetDefault)
	defer sdb.Close()
	require.NoError(t, sdb.QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery))
	assert.True(t, inRecovery, "target_session_attrs=standby makes the default target the replicas")
}
