package failover_test

import (
	"context"
	"fmt"
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

// The tracer keeps the SQL of the names an application prepares on a
// connection, up to 4096 (pgx's Deallocate is not traced). With 257 names
// the last, with spaces, prepared as COMMIT AND CHAIN, is read as its SQL:
// at a bound of 256 it was read as its own text, a statement that keeps
// the transaction, and fn ran again.
func TestRunInTxManyPreparedNames(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 0})
	m, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(testLogger(t)), hasql.WithConfigureNode(func(_ hasql.NodeConfig, cfg *pgxpool.Config) error {
		cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
			for i := 0; i < 256; i++ {
				if _, err := conn.Prepare(ctx, fmt.Sprintf("app q%d", i), fmt.Sprintf("SELECT %d", i)); err != nil {
					return err
				}
			}
			_, err := conn.Prepare(ctx, "app commit chain", "COMMIT AND CHAIN")
			return err
		}
		return nil
	}))
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	_, err = m.Master().Exec(ctx, "CREATE TABLE rvp_t (n serial PRIMARY KEY, note text)")
	require.NoError(t, err)
	runs := 0
	err = failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
		runs++
		if _, err := tx.Exec(ctx, "INSERT INTO rvp_t (note) VALUES ('x')"); err != nil {
			return err
		}
		if runs > 1 {
			return nil
		}
		if _, err := tx.Exec(ctx, "app commit chain"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DO $$BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END$$")
		return err
	})
	var k int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM rvp_t").Scan(&k))
	t.Logf("RunInTx: %v; runs %d; rows committed %d", err, runs, k)
	assert.Equal(t, 1, runs, "fn ran again after its work committed")
	assert.Equal(t, 1, k, "fn's write committed twice")
}

// fn meets a serialization failure on its own connection, rolls back with
// ROLLBACK AND CHAIN and returns the error. Nothing committed: fn runs
// again (the status after fn, 'T', had the 40001 taken for another
// connection's).
func TestRunInTxRollbackAndChainAfter40001IsRetried(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 0})
	m, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(testLogger(t)))
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	runs := 0
	err = failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
		runs++
		if runs > 1 {
			return nil
		}
		_, err := tx.Exec(ctx, "DO $$BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END$$")
		if err != nil {
			if _, rerr := tx.Exec(ctx, "ROLLBACK AND CHAIN"); rerr != nil {
				return rerr
			}
		}
		return err
	})
	t.Logf("RunInTx: %v; runs %d", err, runs)
	assert.Equal(t, 2, runs, "a serialization failure of fn's own, nothing committed: fn should run again")
	assert.NoError(t, err)
}
