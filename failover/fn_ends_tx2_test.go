package failover_test

// Ways fn commits or rolls back its transaction and opens a new one (AND
// CHAIN), which the transaction status after fn does not show ('T'): a
// prepared statement named with a space or a dash, a BEGIN ATOMIC
// look-alike, a cancelled wait for a synchronous standby, a savepoint
// rolled back after a serialization failure. Statements sent through
// tx.Conn().PgConn() and the output of a QueryRewriter are not read (see
// RunInTx's doc).

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

const raise40001 = "DO $$BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END$$"

func TestRunInTxFnEndsTheTransactionMore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 0})
	m, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(testLogger(t)), hasql.WithConfigureNode(func(_ hasql.NodeConfig, cfg *pgxpool.Config) error {
		cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
			// Prepared statements whose names are not one word.
			if _, err := conn.Prepare(ctx, "app commit chain", "COMMIT AND CHAIN"); err != nil {
				return err
			}
			if _, err := conn.Prepare(ctx, "app-rollback-chain", "ROLLBACK AND CHAIN"); err != nil {
				return err
			}
			// A one-word name: taken for a possible COMMIT.
			_, err := conn.Prepare(ctx, "appundo", "ROLLBACK AND CHAIN")
			return err
		}
		return nil
	}))
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	_, err = m.Master().Exec(ctx, "CREATE TABLE chain_t (n serial PRIMARY KEY, note text)")
	require.NoError(t, err)
	count := func(t *testing.T, note string) int {
		var k int
		require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM chain_t WHERE note = $1", note).Scan(&k))
		return k
	}

	// fn commits its insert (and chains a new transaction) in a way the
	// watch misses, then meets a serialization failure on its own
	// connection: RunInTx runs fn again, and the insert commits twice.
	commitThenRetryable := func(t *testing.T, note string, commit func(ctx context.Context, tx pgx.Tx) error) {
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if _, err := tx.Exec(ctx, "INSERT INTO chain_t (note) VALUES ($1)", note); err != nil {
				return err
			}
			if runs > 1 {
				return nil
			}
			if err := commit(ctx, tx); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, raise40001)
			return err
		})
		k := count(t, note)
		t.Logf("RunInTx: %v; runs %d; rows committed %d", err, runs, k)
		assert.Equal(t, 1, runs, "fn ran again after its work committed")
		assert.Equal(t, 1, k, "fn's write committed twice")
	}
	t.Run("prepared name with a space, COMMIT AND CHAIN", func(t *testing.T) {
		commitThenRetryable(t, "prepared-space", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "app commit chain")
			return err
		})
	})
	t.Run("BEGIN ATOMIC look-alike hides END AND CHAIN", func(t *testing.T) {
		commitThenRetryable(t, "atomic-lookalike", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "SELECT begin atomic FROM (VALUES (1)) v(begin); END AND CHAIN", pgx.QueryExecModeSimpleProtocol)
			return err
		})
	})

	// fn rolls its work back (and chains a new transaction) and returns
	// nil: RunInTx reports success, and nothing of fn's committed.
	rolledBackNil := func(t *testing.T, note string, undo func(ctx context.Context, tx pgx.Tx) error) {
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO chain_t (note) VALUES ($1)", note); err != nil {
				return err
			}
			return undo(ctx, tx)
		})
		k := count(t, note)
		t.Logf("RunInTx: %v; rows committed %d", err, k)
		if err == nil {
			assert.Equal(t, 1, k, "RunInTx reported success (nil) and fn's write did not commit")
		}
	}
	t.Run("prepared name with a dash, ROLLBACK AND CHAIN, nil", func(t *testing.T) {
		rolledBackNil(t, "prepared-dash-rollback", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "app-rollback-chain")
			return err
		})
	})
	t.Run("prepared one-word name, ROLLBACK AND CHAIN, nil", func(t *testing.T) {
		rolledBackNil(t, "prepared-word-rollback", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "appundo")
			return err
		})
	})

	// A serialization failure (or deadlock) inside a savepoint fn rolls
	// back (pgx.BeginFunc does) leaves the transaction in status 'T':
	// classifyInTx takes the server's 40001 for another connection's,
	// and RunInTx no longer runs fn again, although nothing committed.
	t.Run("40001 in a savepoint (pgx.BeginFunc) is retried", func(t *testing.T) {
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if runs > 1 {
				return nil
			}
			return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
				_, err := sp.Exec(ctx, raise40001)
				return err
			})
		})
		t.Logf("RunInTx: %v; runs %d; class %v", err, runs, failover.Classify(err))
		assert.Equal(t, 2, runs, "a serialization failure on fn's own transaction, nothing committed, was not run again")
		assert.NoError(t, err)
	})
}
