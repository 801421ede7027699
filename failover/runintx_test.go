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
	m, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(testLogger(t)))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	_, err = m.Master().Exec(ctx, "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)")
	require.NoError(t, err)
	_, err = m.Master().Exec(ctx, "INSERT INTO accounts VALUES (1, 100), (2, 0)")
	require.NoError(t, err)
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
	m, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(testLogger(t)))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	_, err = m.Master().Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)")
	require.NoError(t, err)

	runs := 0
	err = failover.RunInTx(ctx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
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
	m, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(testLogger(t)))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 1))
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
