package failover_test

import (
	"context"
	"errors"
	"sync/atomic"
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

func TestRunInTx(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := readyManager(t, ctx, c, 2, "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)", "INSERT INTO accounts VALUES (1, 100), (2, 0)")
	count := func(sql string) int {
		var n int
		require.NoError(t, m.Master().QueryRow(ctx, sql).Scan(&n))
		return n
	}

	t.Run("commits", func(t *testing.T) {
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			_, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance - 10 WHERE id = 1")
			if err == nil {
				_, err = tx.Exec(ctx, "UPDATE accounts SET balance = balance + 10 WHERE id = 2")
			}
			return err
		})
		require.NoError(t, err)
		assert.Equal(t, 1, runs)
		assert.Equal(t, 10, count("SELECT balance FROM accounts WHERE id = 2"))
	})

	t.Run("the caller's error comes back as it is, rolled back", func(t *testing.T) {
		errFunds := errors.New("insufficient funds")
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = 0 WHERE id = 1"); err != nil {
				return err
			}
			return errFunds
		})
		assert.Same(t, errFunds, err)
		assert.Equal(t, 1, runs)
		assert.Equal(t, 90, count("SELECT balance FROM accounts WHERE id = 1"), "rolled back")
	})

	t.Run("a constraint violation is not retried", func(t *testing.T) {
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			_, err := tx.Exec(ctx, "INSERT INTO accounts VALUES (1, 5)")
			return err
		})
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		assert.Equal(t, "23505", pgErr.Code)
		assert.Equal(t, 1, runs)
	})

	t.Run("a serialization failure runs it again", func(t *testing.T) {
		runs := 0
		var retries []failover.Class
		err := failover.RunInTx(ctx, m, failover.Options{OnRetry: func(_ int, _ error, c failover.Class, _ time.Duration) {
			retries = append(retries, c)
		}}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if runs == 1 {
				_, err := tx.Exec(ctx, "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$")
				return err
			}
			_, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance + 1 WHERE id = 2")
			return err
		})
		require.NoError(t, err)
		assert.Equal(t, 2, runs)
		assert.Equal(t, []failover.Class{failover.Serialization}, retries)
		assert.Equal(t, 11, count("SELECT balance FROM accounts WHERE id = 2"), "applied once")

		runs = 0
		err = failover.RunInTx(ctx, m, failover.Options{NoSerializationRetry: true}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			_, err := tx.Exec(ctx, "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$")
			return err
		})
		assert.ErrorIs(t, err, failover.ErrSerialization)
		assert.Equal(t, 1, runs)
	})

	t.Run("attempts and context bound the retries", func(t *testing.T) {
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3, InitialBackoff: time.Millisecond}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			_, err := tx.Exec(ctx, "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$")
			return err
		})
		assert.Equal(t, 3, runs)
		var fe *failover.Error
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, 3, fe.Attempts)
		assert.Equal(t, failover.Serialization, fe.Class)

		short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancelShort()
		runs = 0
		err = failover.RunInTx(short, m, failover.Options{MaxAttempts: 1000, InitialBackoff: 20 * time.Millisecond}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			_, err := tx.Exec(ctx, "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$")
			return err
		})
		require.Error(t, err)
		assert.Less(t, runs, 10, "the context stops the retries")
	})

	t.Run("the master fails during the transaction: it runs again on the new one", func(t *testing.T) {
		var runs atomic.Int32
		err := failover.RunInTx(ctx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
			if runs.Add(1) == 1 {
				if _, err := tx.Exec(ctx, "INSERT INTO accounts VALUES (10, 1)"); err != nil {
					return err
				}
				require.NoError(t, n1.Kill())
				require.NoError(t, c.Failover(ctx, n2))
			}
			_, err := tx.Exec(ctx, "INSERT INTO accounts VALUES (11, 1)")
			return err
		})
		require.NoError(t, err)
		assert.Equal(t, int32(2), runs.Load())
		conn, err := n2.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close(ctx)
		var rows int
		require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM accounts WHERE id IN (10, 11)").Scan(&rows))
		assert.Equal(t, 1, rows, "the second run committed on the new master; the first never committed")
	})
}

func TestRunInTxCommitOutcomeUnknown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := readyManager(t, ctx, c, 2, "CREATE TABLE t (id int PRIMARY KEY)")

	runs := 0
	err := failover.RunInTx(ctx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
		runs++
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
			return err
		}
		// The master hangs with the COMMIT on its way, and a replica is
		// promoted: the manager fails the connection in flight.
		require.NoError(t, n1.Pause())
		go func() { _ = c.Failover(ctx, n2) }()
		return nil
	})
	require.ErrorIs(t, err, failover.ErrCommitUnknown)
	assert.Equal(t, 1, runs, "a commit of unknown outcome is never run again")
	var fe *failover.Error
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, failover.CommitUnknown, fe.Class)
	require.NoError(t, n1.Resume())
}

func TestOnMasterChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := readyManager(t, ctx, c, 1)
	seen := make(chan string, 10)
	watchCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		failover.OnMasterChange(watchCtx, m, func(addr string) { seen <- addr })
	}()
	assert.Equal(t, c.Nodes()[0].Addr(), <-seen)
	require.NoError(t, c.Nodes()[0].Kill())
	assert.Equal(t, "", <-seen, "no master")
	require.NoError(t, c.Failover(ctx, c.Nodes()[1]))
	assert.Equal(t, c.Nodes()[1].Addr(), <-seen)
	stop()
	<-done
}

// TestRunInTxContextEndsDuringCommit holds a COMMIT up (the synchronous
// replica is paused, so the master waits for it) and ends the context while
// it waits, by cancelling it or by its deadline: the transaction commits once
// the replica resumes, so RunInTx must say the outcome is unknown and not run
// it again.
func TestRunInTxContextEndsDuringCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1, SyncReplicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := readyManager(t, ctx, c, 1, "CREATE TABLE t (id int PRIMARY KEY)")
	admin, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer admin.Close(context.Background())

	// waitingCommits counts the master's backends waiting for the
	// synchronous replica.
	waitingCommits := func() int {
		var n int
		require.NoError(t, admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").Scan(&n))
		return n
	}
	// watchCommit calls f once a COMMIT waits for the replica, or gives up
	// when ctx ends; done is closed when it returns.
	watchCommit := func(ctx context.Context, f func()) (done chan struct{}) {
		done = make(chan struct{})
		go func() {
			defer close(done)
			for ctx.Err() == nil {
				var n int
				if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").Scan(&n); err == nil && n > 0 {
					f()
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		return done
	}
	present := func(id int) bool {
		var n int
		require.NoError(t, admin.QueryRow(ctx, "SELECT count(*) FROM t WHERE id = $1", id).Scan(&n))
		return n == 1
	}
	run := func(t *testing.T, txCtx context.Context, id int) (error, int) {
		runs := 0
		err := failover.RunInTx(txCtx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			_, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", id)
			return err
		})
		return err, runs
	}
	// The pool has a connection before the clock of the deadline starts.
	_, err = m.Master().Exec(ctx, "SELECT 1")
	require.NoError(t, err)

	for _, tc := range []struct {
		name string
		id   int
		// start returns the context RunInTx runs in and a function the
		// watcher calls when the COMMIT waits.
		start func() (context.Context, context.CancelFunc, func())
	}{
		{"cancelled", 1, func() (context.Context, context.CancelFunc, func()) {
			txCtx, cancelTx := context.WithCancel(ctx)
			return txCtx, cancelTx, cancelTx
		}},
		{"deadline", 2, func() (context.Context, context.CancelFunc, func()) {
			// The COMMIT waits until the replica resumes, long after
			// this deadline; what comes before it takes milliseconds.
			txCtx, cancelTx := context.WithTimeout(ctx, 5*time.Second)
			return txCtx, cancelTx, func() {}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, 0, waitingCommits())
			require.NoError(t, n2.Pause())
			resumed := false
			defer func() {
				if !resumed {
					_ = n2.Resume()
				}
			}()
			txCtx, cancelTx, onCommit := tc.start()
			defer cancelTx()
			var seen atomic.Bool
			watched := watchCommit(txCtx, func() { seen.Store(true); onCommit() })
			err, runs := run(t, txCtx, tc.id)
			<-watched
			require.True(t, seen.Load(), "the context ended while COMMIT waited for the synchronous replica (err %v)", err)
			require.ErrorIs(t, err, failover.ErrCommitUnknown, "the context ended during COMMIT: the outcome is unknown")
			var fe *failover.Error
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, failover.CommitUnknown, fe.Class)
			assert.Equal(t, 1, fe.Attempts)
			assert.Equal(t, 1, runs, "a commit of unknown outcome is never run again")

			require.NoError(t, n2.Resume())
			resumed = true
			require.Eventually(t, func() bool { return present(tc.id) }, 30*time.Second, 5*time.Millisecond,
				"the transaction whose COMMIT outlived its context committed")
			require.Eventually(t, func() bool { return waitingCommits() == 0 }, 30*time.Second, 5*time.Millisecond)
			var rows int
			require.NoError(t, admin.QueryRow(ctx, "SELECT count(*) FROM t WHERE id = $1", tc.id).Scan(&rows))
			assert.Equal(t, 1, rows, "it ran once")
		})
	}
}

// TestRunInTxNoMaster: with the master down and nobody promoted, RunInTx
// waits for a master until its context ends and then says there was none;
// a master that comes back in time takes the transaction.
func TestRunInTxNoMaster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]
	m := readyManager(t, ctx, c, 0, "CREATE TABLE t (id int PRIMARY KEY)")
	insert := func(ctx context.Context, id int, runs *atomic.Int32) error {
		return failover.RunInTx(ctx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
			runs.Add(1)
			_, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", id)
			return err
		})
	}
	require.NoError(t, n1.Kill())

	t.Run("none within the context", func(t *testing.T) {
		short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
		defer cancelShort()
		var runs atomic.Int32
		err := insert(short, 1, &runs)
		require.Error(t, err)
		assert.ErrorIs(t, err, hasql.ErrNoMaster, "the error unwraps to hasql.ErrNoMaster")
		var fe *failover.Error
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, failover.NoMaster, fe.Class, "no master is not permanent: %v", err)
		assert.NotErrorIs(t, err, failover.ErrPermanent)
		assert.Contains(t, err.Error(), "no master")
		assert.Equal(t, int32(0), runs.Load(), "the transaction never started")
	})

	t.Run("one comes back within the context", func(t *testing.T) {
		var runs atomic.Int32
		done := make(chan error, 1)
		go func() { done <- insert(ctx, 2, &runs) }()
		require.Eventually(t, func() bool { return m.Stat().Master == "" }, 30*time.Second, 5*time.Millisecond)
		require.NoError(t, n1.Start())
		require.NoError(t, <-done)
		assert.Equal(t, int32(1), runs.Load())
		var n int
		require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM t WHERE id = 2").Scan(&n))
		assert.Equal(t, 1, n)
	})
}
