package failover_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// Ways fn commits or rolls back its transaction and opens a new one (AND
// CHAIN), which the transaction status after fn does not show ('T'): a
// prepared statement named with a space or a dash, a BEGIN ATOMIC
// look-alike, a cancelled wait for a synchronous standby, a savepoint
// rolled back after a serialization failure. Statements sent through
// tx.Conn().PgConn() and the output of a QueryRewriter are not read (see
// RunInTx's doc).

const raise40001 = "DO $$BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END$$"

func TestRunInTxFnEndsTheTransactionMore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 0})
	m := preparedManager(t, ctx, c, 0, nil, [][2]string{
		// Prepared statements whose names are not one word.
		{"app commit chain", "COMMIT AND CHAIN"},
		{"app-rollback-chain", "ROLLBACK AND CHAIN"},
		// A one-word name: taken for a possible COMMIT.
		{"appundo", "ROLLBACK AND CHAIN"},
	}, "CREATE TABLE chain_t (n serial PRIMARY KEY, note text)")
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
	// pgconn's ExecBatch writes past the frontend, to the connection.
	t.Run("PgConn ExecBatch COMMIT AND CHAIN", func(t *testing.T) {
		commitThenRetryable(t, "pgbatch-chain", func(ctx context.Context, tx pgx.Tx) error {
			b := &pgconn.Batch{}
			b.ExecParams("SELECT 1", nil, nil, nil, nil)
			b.ExecParams("COMMIT AND CHAIN", nil, nil, nil, nil)
			_, err := tx.Conn().PgConn().ExecBatch(ctx, b).ReadAll()
			return err
		})
	})
	// Read, they keep the transaction: a serialization failure after
	// them is retried.
	t.Run("PgConn ExecBatch read then 40001 is retried", func(t *testing.T) {
		note := "pgbatch-read"
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if _, err := tx.Exec(ctx, "INSERT INTO chain_t (note) VALUES ($1)", note); err != nil {
				return err
			}
			b := &pgconn.Batch{}
			b.ExecParams("SELECT 'COMMIT'", nil, nil, nil, nil)
			b.ExecParams("SELECT 2", nil, nil, nil, nil)
			if _, err := tx.Conn().PgConn().ExecBatch(ctx, b).ReadAll(); err != nil {
				return err
			}
			if runs == 1 {
				_, err := tx.Exec(ctx, raise40001)
				return err
			}
			return nil
		})
		k := count(t, note)
		t.Logf("RunInTx: %v; runs %d; rows committed %d", err, runs, k)
		require.NoError(t, err)
		assert.Equal(t, 2, runs, "a read through ExecBatch stopped the retry")
		assert.Equal(t, 1, k)
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
	m := preparedManager(t, ctx, c, 0, nil, [][2]string{{"insert_note", "INSERT INTO prepared_t (note) VALUES ($1)"}})
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

// fn commits with COMMIT AND CHAIN through tx.Conn() (seen by the watch:
// fn is not run again), the commit's wait for the synchronous standby is
// cancelled (committed on the master alone), and fn goes on in the chained
// transaction, which RunInTx commits. The cancelled wait is read only from
// the connection's last statement: RunInTx reports success.
func TestRunInTxSyncCancelAfterACommitAndChain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	_, m, n1, stop, restore := syncStoppableCluster(t, ctx, "CREATE TABLE syncchain_t (n serial PRIMARY KEY, note text)")
	for _, tc := range []struct {
		name   string
		commit func(ctx context.Context, tx pgx.Tx) error
	}{
		{"tx.Conn().Exec COMMIT AND CHAIN", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Conn().Exec(ctx, "COMMIT AND CHAIN")
			return err
		}},
		{"tx.Query COMMIT AND CHAIN", func(ctx context.Context, tx pgx.Tx) error {
			rows, err := tx.Query(ctx, "COMMIT AND CHAIN")
			if err != nil {
				return err
			}
			rows.Close()
			return rows.Err()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stop()
			cancelled := cancelSyncWaiter(ctx, n1, restore)
			var sawCancelled bool
			runs := 0
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
				runs++
				if _, err := tx.Exec(ctx, "INSERT INTO syncchain_t (note) VALUES ($1)", tc.name); err != nil {
					return err
				}
				if err := tc.commit(ctx, tx); err != nil {
					return err
				}
				sawCancelled = hasql.SyncRepCancelled(tx.Conn())
				_, err := tx.Exec(ctx, "INSERT INTO syncchain_t (note) VALUES ($1)", tc.name+" audit")
				return err
			})
			require.NoError(t, <-cancelled)
			t.Logf("RunInTx: %v; runs %d; SyncRepCancelled right after fn's commit: %v", err, runs, sawCancelled)
			require.True(t, sawCancelled, "the sync wait was cancelled")
			assert.Equal(t, 1, runs)
			assert.ErrorIs(t, err, failover.ErrCommitUnknown, "a commit on the master alone reported as success")
			assert.ErrorIs(t, err, hasql.ErrSyncRepCancelled)
		})
	}
}

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

// The tracer keeps the SQL of the names an application prepares on a
// connection, up to 4096 (pgx's Deallocate is not traced). With 257 names
// the last, with spaces, prepared as COMMIT AND CHAIN, is read as its SQL:
// at a bound of 256 it was read as its own text, a statement that keeps
// the transaction, and fn ran again.
func TestRunInTxManyPreparedNames(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 0})
	var prepare [][2]string
	for i := 0; i < 256; i++ {
		prepare = append(prepare, [2]string{fmt.Sprintf("app q%d", i), fmt.Sprintf("SELECT %d", i)})
	}
	m := preparedManager(t, ctx, c, 0, nil, append(prepare, [2]string{"app commit chain", "COMMIT AND CHAIN"}),
		"CREATE TABLE rvp_t (n serial PRIMARY KEY, note text)")
	runs := 0
	err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
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

// fn commits with a batch whose COMMIT AND CHAIN is not the batch's last
// query, the commit's sync wait is cancelled, and fn goes on with one more
// statement: the commit is on the master alone, and RunInTx says so. The
// batch is read as one string; read query by query, the batch's next query
// took the COMMIT's place and read the flag of the statement before the
// batch, and RunInTx reported success.
func TestRunInTxSyncCancelInABatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	_, m, n1, stop, restore := syncStoppableCluster(t, ctx, "CREATE TABLE rvsync_t (n serial PRIMARY KEY, note text)")
	stop()
	cancelled := cancelSyncWaiter(ctx, n1, restore)
	var sawCancelled bool
	runs := 0
	err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
		runs++
		if _, err := tx.Exec(ctx, "INSERT INTO rvsync_t (note) VALUES ('a')"); err != nil {
			return err
		}
		b := &pgx.Batch{}
		b.Queue("COMMIT AND CHAIN")
		b.Queue("SELECT 1")
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		sawCancelled = hasql.SyncRepCancelled(tx.Conn())
		_, err := tx.Exec(ctx, "INSERT INTO rvsync_t (note) VALUES ('audit')")
		return err
	})
	require.NoError(t, <-cancelled)
	t.Logf("RunInTx: %v; runs %d; SyncRepCancelled right after the batch: %v", err, runs, sawCancelled)
	require.True(t, sawCancelled, "the sync wait was cancelled")
	assert.Equal(t, 1, runs)
	assert.ErrorIs(t, err, failover.ErrCommitUnknown, "a commit on the master alone reported as success")
	assert.ErrorIs(t, err, hasql.ErrSyncRepCancelled)
}
