package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/testcluster"
)

// hasql.NeverRan takes any error whose SQLSTATE is 57P05 for a session the
// server ended while idle, before it read the statement, and the routed
// Querier runs such a statement again. But 57P05 is only a code: a
// statement that committed work and then failed with it (a DO block or a
// procedure that commits, then raises an error carrying the code, as
// postgres_fdw does with a remote's) is an ERROR on a session that goes on,
// nothing like an idle timeout's FATAL. The routed Exec on the master must
// not run it again (it made the committed insert three times).
func TestErrorCoded57P05AfterACommitIsNotRunAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := newManager(t, ctx, c.DSN())
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	_, err := m.Master().Exec(ctx, "CREATE TABLE p05_writes (id serial PRIMARY KEY)")
	require.NoError(t, err)
	_, err = m.Master().Exec(ctx, `DO $$ BEGIN
		INSERT INTO p05_writes DEFAULT VALUES;
		COMMIT;
		RAISE EXCEPTION 'remote session ended' USING ERRCODE = '57P05';
	END $$`)
	t.Logf("routed Exec: %v (class %s)", err, failover.Classify(err))
	require.Error(t, err)
	var n int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM p05_writes").Scan(&n))
	assert.Equal(t, 1, n, "the statement committed once and was run again after an ERROR coded 57P05")
	assert.NotEqual(t, failover.SafeToRetry, failover.Classify(err), "an ERROR (not FATAL) coded 57P05 after a commit called safe to retry")
}
