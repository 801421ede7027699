package failover_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// End to end: a BEGIN ATOMIC body before a COMMIT, and a rollback then a read.
func TestRunInTxAtomicBodyAndRollbackThenRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 0})
	m, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(testLogger(t)))
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	_, err = m.Master().Exec(ctx, "CREATE TABLE atomic_t (n serial PRIMARY KEY, note text)")
	require.NoError(t, err)
	count := func(t *testing.T, note string) int {
		var k int
		require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM atomic_t WHERE note = $1", note).Scan(&k))
		return k
	}

	// An empty BEGIN ATOMIC body before a COMMIT AND CHAIN (the status
	// after fn is 'T'), then a serialization failure on fn's own
	// connection: fn is not run again (reading past the body, the lexer
	// missed the COMMIT and fn's insert committed twice).
	t.Run("empty BEGIN ATOMIC body hides COMMIT AND CHAIN", func(t *testing.T) {
		runs := 0
		note := "atomic-empty"
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if _, err := tx.Exec(ctx, "INSERT INTO atomic_t (note) VALUES ($1)", note); err != nil {
				return err
			}
			if runs > 1 {
				return nil
			}
			if _, err := tx.Exec(ctx, "CREATE OR REPLACE FUNCTION app_f3() RETURNS void LANGUAGE sql BEGIN ATOMIC END; COMMIT AND CHAIN", pgx.QueryExecModeSimpleProtocol); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "DO $$BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END$$")
			return err
		})
		k := count(t, note)
		t.Logf("RunInTx: %v; runs %d; rows committed %d", err, runs, k)
		assert.Equal(t, 1, runs, "fn ran again after its work committed")
		assert.Equal(t, 1, k, "fn's write committed twice")
	})

	// fn rolls its write back, reads something on the connection, and
	// returns nil: fn's write did not commit, and RunInTx says so (a read
	// after the rollback was taken for a commit, and success reported).
	t.Run("rollback then a read returns nil", func(t *testing.T) {
		note := "rollback-read"
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO atomic_t (note) VALUES ($1)", note); err != nil {
				return err
			}
			if err := tx.Rollback(ctx); err != nil {
				return err
			}
			var one int
			return tx.Conn().QueryRow(ctx, "SELECT 1").Scan(&one)
		})
		k := count(t, note)
		t.Logf("RunInTx: %v; rows committed %d", err, k)
		if err == nil {
			assert.Equal(t, 1, k, "RunInTx reported success (nil) and fn's write did not commit")
		}
	})
}

var _ = testcluster.Options{}
