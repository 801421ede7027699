package failover_test

// fnState sequences RunInTx once reported wrongly, on one cluster with
// a synchronous standby (syncStoppableCluster). Each subtest is one
// finding; see the assertion messages.

import (
	"context"
	"sync/atomic"
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

// cancelSyncWaiter cancels (pg_cancel_backend) the first backend seen
// waiting in SyncRep on master, then restores the standby's stream
// (restore, when not nil).
func cancelSyncWaiter(ctx context.Context, master *testcluster.Node, restore func()) chan error {
	cancelled := make(chan error, 1)
	go func() {
		conn, err := master.Conn(ctx)
		if err != nil {
			cancelled <- err
			return
		}
		defer conn.Close(context.Background())
		for ctx.Err() == nil {
			var k int
			if err := conn.QueryRow(ctx, "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").Scan(&k); err != nil {
				cancelled <- err
				return
			}
			if k > 0 {
				if restore != nil {
					restore()
				}
				cancelled <- nil
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancelled <- ctx.Err()
	}()
	return cancelled
}

func TestRunInTxFnState(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c, m, n1, stop, restore := syncStoppableCluster(t, ctx,
		"CREATE TABLE state_t (n serial PRIMARY KEY, note text)",
		"CREATE TABLE state_u (k int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
	count := func(t *testing.T, note string) int {
		var k int
		require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM state_t WHERE note = $1", note).Scan(&k))
		return k
	}
	ins := func(ctx context.Context, tx pgx.Tx, note string) error {
		_, err := tx.Exec(ctx, "INSERT INTO state_t (note) VALUES ($1)", note)
		return err
	}

	// fn commits, then writes once more outside a transaction (it runs on
	// its own, autocommit), whose wait for the synchronous standby is
	// cancelled, then reads. The write is on the master alone: RunInTx
	// must say ErrSyncRepCancelled. note() marks a statement after the
	// transaction "committed" but not lastCommit, so its flag is never
	// read, and the next statement clears it.
	t.Run("autocommit write after fn's COMMIT, sync wait cancelled", func(t *testing.T) {
		var saw bool
		var cancelled chan error
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 1}, func(ctx context.Context, tx pgx.Tx) error {
			if err := ins(ctx, tx, "ac-1"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "COMMIT"); err != nil {
				return err
			}
			stop()
			cancelled = cancelSyncWaiter(ctx, n1, restore)
			if err := ins(ctx, tx, "ac-2"); err != nil { // autocommit: waits in SyncRep, cancelled
				return err
			}
			saw = hasql.SyncRepCancelled(tx.Conn())
			_, err := tx.Exec(ctx, "SELECT 1")
			return err
		})
		require.NoError(t, <-cancelled)
		t.Logf("RunInTx: %v; SyncRepCancelled after the autocommit write: %v; rows ac-2: %d", err, saw, count(t, "ac-2"))
		require.True(t, saw)
		assert.ErrorIs(t, err, hasql.ErrSyncRepCancelled, "a write committed on the master alone reported as success")
	})

	// fn rolls back with ROLLBACK AND CHAIN, writes again in the chained
	// transaction and commits it with tx.Commit (nil), whose sync wait is
	// cancelled. RunInTx says "fn rolled its transaction back ... did not
	// commit" although the row committed, on the master alone.
	t.Run("ROLLBACK AND CHAIN, write, tx.Commit with sync wait cancelled", func(t *testing.T) {
		var cancelled chan error
		var commitErr error
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 1}, func(ctx context.Context, tx pgx.Tx) error {
			if err := ins(ctx, tx, "rbc-0"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "ROLLBACK AND CHAIN"); err != nil {
				return err
			}
			if err := ins(ctx, tx, "rbc-1"); err != nil {
				return err
			}
			stop()
			cancelled = cancelSyncWaiter(ctx, n1, restore)
			commitErr = tx.Commit(ctx)
			return commitErr
		})
		require.NoError(t, <-cancelled)
		k := count(t, "rbc-1")
		t.Logf("RunInTx: %v; fn's tx.Commit: %v; rows rbc-1 committed: %d", err, commitErr, k)
		require.NoError(t, commitErr)
		require.Equal(t, 1, k)
		assert.ErrorIs(t, err, hasql.ErrSyncRepCancelled, "a commit on the master alone not reported as such")
		assert.ErrorIs(t, err, failover.ErrCommitUnknown)
	})

	// The same without the sync cancel: fn's work after ROLLBACK AND
	// CHAIN committed (tx.Commit said nil, fn returned nil), and RunInTx
	// returns an error saying it did not.
	t.Run("ROLLBACK AND CHAIN, write, tx.Commit", func(t *testing.T) {
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 1}, func(ctx context.Context, tx pgx.Tx) error {
			if err := ins(ctx, tx, "rbc2-0"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "ROLLBACK AND CHAIN"); err != nil {
				return err
			}
			if err := ins(ctx, tx, "rbc2-1"); err != nil {
				return err
			}
			return tx.Commit(ctx)
		})
		k := count(t, "rbc2-1")
		t.Logf("RunInTx: %v; rows rbc2-1 committed: %d", err, k)
		require.Equal(t, 1, k)
		if err != nil {
			assert.NotContains(t, err.Error(), "did not commit", "RunInTx says fn's work did not commit; it did")
		}
	})

	// COMMIT AND CHAIN whose sync wait is cancelled, then tx.Rollback of
	// the chained transaction, fn returns nil: the first part committed
	// on the master alone; RunInTx says "did not commit".
	t.Run("COMMIT AND CHAIN with sync wait cancelled, then tx.Rollback", func(t *testing.T) {
		var saw bool
		var cancelled chan error
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 1}, func(ctx context.Context, tx pgx.Tx) error {
			if err := ins(ctx, tx, "cac-1"); err != nil {
				return err
			}
			stop()
			cancelled = cancelSyncWaiter(ctx, n1, restore)
			if _, err := tx.Exec(ctx, "COMMIT AND CHAIN"); err != nil {
				return err
			}
			saw = hasql.SyncRepCancelled(tx.Conn())
			return tx.Rollback(ctx) // nothing more to do
		})
		require.NoError(t, <-cancelled)
		k := count(t, "cac-1")
		t.Logf("RunInTx: %v; SyncRepCancelled after COMMIT AND CHAIN: %v; rows cac-1 committed: %d", err, saw, k)
		require.True(t, saw)
		require.Equal(t, 1, k)
		assert.ErrorIs(t, err, hasql.ErrSyncRepCancelled, "a commit on the master alone not reported as such")
	})

	// The server refuses fn's own COMMIT (a deferred unique constraint:
	// 23505 at COMMIT, as a 40001 of SERIALIZABLE would be); fn ignores
	// tx.Commit's error and returns nil. Nothing committed; RunInTx
	// reports success. (fnCommitted ignores st.unsure when the
	// connection is open.)
	t.Run("fn's tx.Commit refused by the server, fn returns nil", func(t *testing.T) {
		var commitErr error
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 1}, func(ctx context.Context, tx pgx.Tx) error {
			if err := ins(ctx, tx, "refused"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "INSERT INTO state_u VALUES (1), (1)"); err != nil {
				return err
			}
			commitErr = tx.Commit(ctx)
			return nil
		})
		k := count(t, "refused")
		t.Logf("RunInTx: %v; fn's tx.Commit: %v; rows committed: %d", err, commitErr, k)
		require.Error(t, commitErr)
		require.Equal(t, 0, k)
		assert.Error(t, err, "RunInTx reported success; nothing committed")
	})

	// fn swallows a failed statement's error (the transaction is then
	// aborted) and sends COMMIT, which the server answers ROLLBACK
	// without an error; fn returns nil. Nothing committed; RunInTx
	// reports success. Control: without fn's COMMIT, RunInTx's own
	// commit reports the failure (pgx.ErrTxCommitRollback).
	for _, own := range []bool{true, false} {
		name := "failed statement swallowed, fn's Exec COMMIT answered ROLLBACK"
		note := "swallowed-own"
		if !own {
			name = "control: failed statement swallowed, RunInTx commits"
			note = "swallowed-ctl"
		}
		t.Run(name, func(t *testing.T) {
			var tag string
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 1}, func(ctx context.Context, tx pgx.Tx) error {
				if err := ins(ctx, tx, note); err != nil {
					return err
				}
				_, _ = tx.Exec(ctx, "SELECT 1/0") // its error ignored
				if own {
					ct, err := tx.Exec(ctx, "COMMIT")
					tag = ct.String()
					return err
				}
				return nil
			})
			k := count(t, note)
			t.Logf("RunInTx: %v; COMMIT's tag %q; rows committed: %d", err, tag, k)
			require.Equal(t, 0, k)
			assert.Error(t, err, "RunInTx reported success; nothing committed")
		})
	}

	// COMMIT AND CHAIN in an aborted transaction rolls it back (tag
	// ROLLBACK) and begins another; fn writes there and returns nil;
	// RunInTx commits the chained transaction and reports success, with
	// fn's first write lost.
	t.Run("COMMIT AND CHAIN in an aborted transaction", func(t *testing.T) {
		var tag string
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 1}, func(ctx context.Context, tx pgx.Tx) error {
			if err := ins(ctx, tx, "cacab-1"); err != nil {
				return err
			}
			_, _ = tx.Exec(ctx, "SELECT 1/0")
			ct, err := tx.Exec(ctx, "COMMIT AND CHAIN")
			tag = ct.String()
			if err != nil {
				return err
			}
			return ins(ctx, tx, "cacab-2")
		})
		k1, k2 := count(t, "cacab-1"), count(t, "cacab-2")
		t.Logf("RunInTx: %v; COMMIT AND CHAIN's tag %q; rows committed: first %d, second %d", err, tag, k1, k2)
		if err == nil {
			assert.Equal(t, 1, k1, "RunInTx reported success; fn's first write did not commit")
		}
	})

	// PostgreSQL runs the COMMIT of the mixed-escape statement of
	// txlex_test.go (standard_conforming_strings on, the default).
	t.Run("PostgreSQL commits on the mixed-escape statement", func(t *testing.T) {
		conn, err := n1.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close(context.Background())
		var scs string
		require.NoError(t, conn.QueryRow(ctx, "SHOW standard_conforming_strings").Scan(&scs))
		for _, sql := range []string{
			"SELECT E'x'\n'\\'' , 'a\\'; COMMIT; --'",
			"INSERT INTO state_t (note) VALUES (E'x'\n'\\'' || 'a\\'); COMMIT; --')",
		} {
			_, err = conn.Exec(ctx, "BEGIN")
			require.NoError(t, err)
			_, err = conn.Exec(ctx, sql)
			st := conn.PgConn().TxStatus()
			t.Logf("standard_conforming_strings %s: %q: err %v, status after %c", scs, sql, err, st)
			assert.NoError(t, err)
			assert.Equal(t, byte('I'), st, "PostgreSQL did not end the transaction")
			if st != 'I' {
				_, _ = conn.Exec(ctx, "ROLLBACK")
			}
		}
	})

	// The mixed-escape statement of txlex_test.go, with its COMMIT's
	// answer lost (the standby stopped, the waiter terminated: committed
	// locally, connection closed). A reader that missed the COMMIT would
	// take the loss for one before COMMIT and run fn again: two rows.
	t.Run("mixed-escape COMMIT lost", func(t *testing.T) {
		const note = "mixed"
		stop()
		var killed atomic.Int32
		done := terminateSyncWaiters(t, ctx, n1, 1, &killed, restore)
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if err := ins(ctx, tx, note); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "SELECT E'x'\n'\\'' , 'a\\'; COMMIT; --'")
			return err
		})
		<-done
		k := count(t, note)
		t.Logf("RunInTx: %v; runs %d; rows committed %d; terminated %d", err, runs, k, killed.Load())
		require.EqualValues(t, 1, killed.Load())
		assert.Equal(t, 1, runs, "fn ran again after its COMMIT committed (answer lost)")
		assert.Equal(t, 1, k, "the write committed more than once")
		assert.ErrorIs(t, err, failover.ErrCommitUnknown)
	})

	// hasql notes a prepared statement's SQL at TracePrepareStart, before
	// the server took it: a Prepare that fails (here: the name exists,
	// with other SQL: 42P05) leaves pgx, and the server, running the old
	// SQL under the name while the watch reads the new. The connection's
	// statement "app_commit4" is COMMIT; a failed re-Prepare with SELECT 1
	// makes RunInTx read tx.Exec("app_commit4") as SELECT 1. Its COMMIT's
	// answer lost, fn runs again: two rows.
	t.Run("failed re-Prepare leaves a stale name", func(t *testing.T) {
		const note = "stale-prepared"
		var reprep atomic.Pointer[error]
		m1, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(testLogger(t)), hasql.WithConfigureNode(func(_ hasql.NodeConfig, cfg *pgxpool.Config) error {
			cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
				if _, err := conn.Prepare(ctx, "app_commit4", "COMMIT"); err != nil {
					return err
				}
				// A second Prepare of the name, with other SQL: refused
				// (42P05), its error ignored.
				_, err := conn.Prepare(ctx, "app_commit4", "SELECT 1")
				reprep.Store(&err)
				return nil
			}
			return nil
		}))
		require.NoError(t, err)
		defer m1.Close()
		require.NoError(t, m1.WaitReady(ctx, 1, 1))
		stop()
		var killed atomic.Int32
		done := terminateSyncWaiters(t, ctx, n1, 1, &killed, restore)
		runs := 0
		var pids []uint32
		err = failover.RunInTx(ctx, m1, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			pids = append(pids, tx.Conn().PgConn().PID())
			if err := ins(ctx, tx, note); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "app_commit4") // pgx runs the prepared COMMIT
			return err
		})
		<-done
		k := count(t, note)
		t.Logf("RunInTx: %v; runs %d on pids %v ; rows committed %d; terminated %d", err, runs, pids, k, killed.Load())
		if e := reprep.Load(); e != nil {
			t.Logf("re-Prepare in AfterConnect: %v", *e)
		}
		require.EqualValues(t, 1, killed.Load())
		assert.Equal(t, 1, runs, "fn ran again after its COMMIT committed (answer lost)")
		assert.Equal(t, 1, k, "the write committed more than once")
	})
}
