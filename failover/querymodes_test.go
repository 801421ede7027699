package failover_test

// RunInTx in each of pgx's query modes (default_query_exec_mode): under
// cache_describe and describe_exec a batch goes out as Parse and Bind of
// the unnamed statement, so its queries are read from the wire as well
// as by pgx's tracer; under cache_statement the Binds name pgx's cached
// statements and only the tracer reads them.

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

// modeManagers starts a Manager on c for cache_statement and one for
// cache_describe.
func modeManagers(t *testing.T, ctx context.Context, c *testcluster.Cluster) map[string]*hasql.Manager {
	out := map[string]*hasql.Manager{}
	for _, mode := range []string{"cache_statement", "cache_describe"} {
		out[mode] = preparedManagerAt(t, ctx, c.DSN()+"&default_query_exec_mode="+mode, 1, nil, nil)
	}
	return out
}

// A batch [INSERT, COMMIT AND CHAIN, SELECT 1] whose COMMIT AND CHAIN's
// wait for the synchronous standby is cancelled, then one more statement
// in the chained transaction, fn returns nil. The first part committed on
// the master alone: ErrSyncRepCancelled is due. (Read from the wire one
// by one, "SELECT 1" was noted before anything was sent and took the
// place of the COMMIT whose flag is read next: the cancel was missed.)
func TestRunInTxBatchSyncCancelInEveryMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1, SyncReplicas: 1})
	ms := modeManagers(t, ctx, c)
	_, err := ms["cache_statement"].Master().Exec(ctx, "CREATE TABLE qm_t (n serial PRIMARY KEY, note text)")
	require.NoError(t, err)
	stop, restore := streamStopper(t, ctx, c.Nodes()[1])
	n1 := c.Nodes()[0]
	for _, mode := range []string{"cache_statement", "cache_describe"} {
		t.Run(mode, func(t *testing.T) {
			m := ms[mode]
			note := "sc-" + mode
			var saw bool
			var cancelled chan error
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 1}, func(ctx context.Context, tx pgx.Tx) error {
				stop(t)
				cancelled = cancelSyncWaiter(ctx, n1, restore)
				b := &pgx.Batch{}
				b.Queue("INSERT INTO qm_t (note) VALUES ($1)", note)
				b.Queue("COMMIT AND CHAIN")
				b.Queue("SELECT 1")
				if err := tx.SendBatch(ctx, b).Close(); err != nil {
					return err
				}
				saw = hasql.SyncRepCancelled(tx.Conn())
				_, err := tx.Exec(ctx, "SELECT 2")
				return err
			})
			require.NoError(t, <-cancelled)
			var k int
			require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM qm_t WHERE note = $1", note).Scan(&k))
			t.Logf("RunInTx: %v; SyncRepCancelled after the batch: %v; rows: %d", err, saw, k)
			require.True(t, saw)
			require.Equal(t, 1, k)
			assert.ErrorIs(t, err, hasql.ErrSyncRepCancelled, "a commit on the master alone reported as success")
		})
	}
}

// A batch [INSERT a, ROLLBACK, INSERT b]: b runs after the ROLLBACK, on
// its own, and commits; fn returns nil. RunInTx must not say fn's work
// did not commit (read from the wire one by one, the ROLLBACK came last
// and it did).
func TestRunInTxBatchRollbackInEveryMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	ms := modeManagers(t, ctx, c)
	_, err := ms["cache_statement"].Master().Exec(ctx, "CREATE TABLE qm_t (n serial PRIMARY KEY, note text)")
	require.NoError(t, err)
	for _, mode := range []string{"cache_statement", "cache_describe"} {
		t.Run("commit-rollback/"+mode, func(t *testing.T) {
			// [INSERT a, COMMIT, ROLLBACK]: a committed; the ROLLBACK
			// after it does nothing (a warning).
			m := ms[mode]
			a := "ca-" + mode
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 1}, func(ctx context.Context, tx pgx.Tx) error {
				bt := &pgx.Batch{}
				bt.Queue("INSERT INTO qm_t (note) VALUES ($1)", a)
				bt.Queue("COMMIT")
				bt.Queue("ROLLBACK")
				return tx.SendBatch(ctx, bt).Close()
			})
			var ka int
			require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM qm_t WHERE note = $1", a).Scan(&ka))
			t.Logf("RunInTx: %v; rows a: %d", err, ka)
			require.Equal(t, 1, ka)
			if err != nil {
				assert.NotContains(t, err.Error(), "did not commit", "RunInTx says fn's work did not commit; a did")
			}
		})
		t.Run(mode, func(t *testing.T) {
			m := ms[mode]
			a, b := "a-"+mode, "b-"+mode
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 1}, func(ctx context.Context, tx pgx.Tx) error {
				bt := &pgx.Batch{}
				bt.Queue("INSERT INTO qm_t (note) VALUES ($1)", a)
				bt.Queue("ROLLBACK")
				bt.Queue("INSERT INTO qm_t (note) VALUES ($1)", b)
				return tx.SendBatch(ctx, bt).Close()
			})
			var ka, kb int
			require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM qm_t WHERE note = $1", a).Scan(&ka))
			require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM qm_t WHERE note = $1", b).Scan(&kb))
			t.Logf("RunInTx: %v; rows a: %d, b: %d", err, ka, kb)
			require.Equal(t, 0, ka)
			require.Equal(t, 1, kb)
			if err != nil {
				assert.NotContains(t, err.Error(), "did not commit", "RunInTx says fn's work did not commit; b did")
			}
		})
	}
}

// Liveness: ordinary fn code (statements, a savepoint, a batch, a COPY,
// pgconn ExecParams and a named Prepare/ExecPrepared) then a 40001:
// nothing committed, fn must run again, in every query mode.
func TestRunInTxRetriedInEveryQueryMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	setup, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(testLogger(t)))
	require.NoError(t, err)
	t.Cleanup(setup.Close)
	require.NoError(t, setup.WaitReady(ctx, 1, 1))
	_, err = setup.Master().Exec(ctx, "CREATE TABLE qm_l (n serial PRIMARY KEY, note text)")
	require.NoError(t, err)
	for _, mode := range []string{"cache_statement", "cache_describe", "describe_exec", "exec", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			m, err := hasql.New(ctx, c.DSN()+"&default_query_exec_mode="+mode, hasql.WithLogger(testLogger(t)))
			require.NoError(t, err)
			defer m.Close()
			require.NoError(t, m.WaitReady(ctx, 1, 1))
			runs := 0
			err = failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 2}, func(ctx context.Context, tx pgx.Tx) error {
				runs++
				if _, err := tx.Exec(ctx, "INSERT INTO qm_l (note) VALUES ($1)", mode); err != nil {
					return err
				}
				var one int
				if err := tx.QueryRow(ctx, "SELECT $1::int", 1).Scan(&one); err != nil {
					return err
				}
				if err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
					_, err := sp.Exec(ctx, "INSERT INTO qm_l (note) VALUES ($1)", mode)
					return err
				}); err != nil {
					return err
				}
				b := &pgx.Batch{}
				b.Queue("INSERT INTO qm_l (note) VALUES ($1)", mode)
				b.Queue("SELECT 1")
				if err := tx.SendBatch(ctx, b).Close(); err != nil {
					return err
				}
				if _, err := tx.CopyFrom(ctx, pgx.Identifier{"qm_l"}, []string{"note"}, pgx.CopyFromRows([][]any{{mode}})); err != nil {
					return err
				}
				pc := tx.Conn().PgConn()
				if _, err := pc.ExecParams(ctx, "INSERT INTO qm_l (note) VALUES ($1)", [][]byte{[]byte(mode)}, nil, nil, nil).Close(); err != nil {
					return err
				}
				if _, err := tx.Conn().Prepare(ctx, "qm_l_ins", "INSERT INTO qm_l (note) VALUES ($1)"); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, "qm_l_ins", mode); err != nil {
					return err
				}
				if runs == 1 {
					_, err := tx.Exec(ctx, "DO $$BEGIN RAISE EXCEPTION 'ser' USING ERRCODE = '40001'; END$$")
					return err
				}
				return nil
			})
			t.Logf("RunInTx: %v; runs %d", err, runs)
			assert.NoError(t, err)
			assert.Equal(t, 2, runs, "a 40001 with nothing committed lost its retry")
		})
	}
}
