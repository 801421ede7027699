package failover_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// The application prepares its INSERT on every connection (AfterConnect,
// the common pgx pattern) and runs it by name in fn. A one-word name is
// taken for a possible COMMIT: fn's transaction, which commits nothing
// before RunInTx's own COMMIT, is never run again. A serialization failure
// on fn's own connection is returned instead of retried; a session
// terminated before COMMIT (nothing committed, fn never reached COMMIT)
// comes back as ErrCommitUnknown.
func TestRunInTxPreparedInsertByNameIsRetried(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 0})
	readyManager(t, ctx, c, 0, "CREATE TABLE IF NOT EXISTS prepared_t (n serial PRIMARY KEY, note text)")
	m, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(testLogger(t)), hasql.WithConfigureNode(func(_ hasql.NodeConfig, cfg *pgxpool.Config) error {
		cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Prepare(ctx, "insert_note", "INSERT INTO prepared_t (note) VALUES ($1)")
			return err
		}
		return nil
	}))
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	count := func(t *testing.T, note string) int {
		var k int
		require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM prepared_t WHERE note = $1", note).Scan(&k))
		return k
	}
	for _, tc := range []struct {
		name string
		fail func(ctx context.Context, tx pgx.Tx) error
	}{
		{"serialization failure", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, raise40001)
			return err
		}},
		{"session terminated before COMMIT", func(ctx context.Context, tx pgx.Tx) error {
			pid := tx.Conn().PgConn().PID()
			if _, err := m.Master().Exec(ctx, "SELECT pg_terminate_backend($1, 5000)", pid); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "SELECT 1")
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runs := 0
			var classes []failover.Class
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3, OnRetry: func(_ int, _ error, c failover.Class, _ time.Duration) {
				classes = append(classes, c)
			}}, func(ctx context.Context, tx pgx.Tx) error {
				runs++
				if _, err := tx.Exec(ctx, "insert_note", tc.name); err != nil {
					return err
				}
				if runs > 1 {
					return nil
				}
				return tc.fail(ctx, tx)
			})
			k := count(t, tc.name)
			t.Logf("RunInTx: %v; class %v; runs %d; retried as %v; rows %d", err, failover.Classify(err), runs, classes, k)
			assert.Equal(t, 2, runs, "nothing committed, and fn was not run again")
			assert.NoError(t, err)
			assert.Equal(t, 1, k)
		})
	}
}
