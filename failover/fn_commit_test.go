package failover_test

// RunInTx's "run again only when nothing committed" and Classify's
// retryable classes, where a write commits and its answer is lost. Each
// test makes a COMMIT land on the server while its answer never reaches
// the client, deterministically: the
// synchronous standby stops receiving WAL, so a COMMIT writes its commit
// record on the master and then waits in SyncRep; pg_terminate_backend of
// that waiting backend makes the server finish the commit locally (it is
// visible, and survives a restart) and close the connection without an
// answer (PostgreSQL: "canceling the wait for synchronous replication and
// terminating connection due to administrator command", then DestNone).

import (
	"context"
	"errors"
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

// syncStoppableCluster starts a master with one synchronous standby and
// returns the cluster, a ready Manager (setup run on the master), the
// master, and functions that stop and restore the standby's WAL stream.
func syncStoppableCluster(t *testing.T, ctx context.Context, setup ...string) (*testcluster.Cluster, *hasql.Manager, *testcluster.Node, func(), func()) {
	t.Helper()
	c := testcluster.New(t, testcluster.Options{Replicas: 1, SyncReplicas: 1})
	m := readyManager(t, ctx, c, 1, setup...)
	stop, restore := streamStopper(t, ctx, c.Nodes()[1])
	return c, m, c.Nodes()[0], func() { stop(t) }, restore
}

// streamStopper returns functions that stop standby's WAL stream (its
// primary_conninfo emptied; stop returns once no walreceiver runs) and
// restore it, on a direct connection to standby.
func streamStopper(t *testing.T, ctx context.Context, standby *testcluster.Node) (stop func(t *testing.T), restore func()) {
	t.Helper()
	direct, err := standby.Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { direct.Close(context.Background()) })
	var conninfo string
	require.NoError(t, direct.QueryRow(ctx, "SHOW primary_conninfo").Scan(&conninfo))
	set := func(v string) error {
		if _, err := direct.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = "+pgQuote(v)); err != nil {
			return err
		}
		_, err := direct.Exec(ctx, "SELECT pg_reload_conf()")
		return err
	}
	stop = func(t *testing.T) {
		require.NoError(t, set(""))
		waitNotStreaming(t, ctx, direct)
	}
	restore = func() {
		if err := set(conninfo); err != nil {
			t.Errorf("restore the standby's stream: %v", err)
		}
	}
	return stop, restore
}

// terminateSyncWaiters terminates, from a connection of its own to master,
// every backend waiting in SyncRep, at most max times (0: until ctx ends),
// and counts them in *killed. after runs after each termination.
func terminateSyncWaiters(t *testing.T, ctx context.Context, master *testcluster.Node, max int, killed *atomic.Int32, after func()) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := master.Conn(ctx)
		if err != nil {
			t.Errorf("terminator: %v", err)
			return
		}
		defer conn.Close(context.Background())
		for ctx.Err() == nil && (max == 0 || int(killed.Load()) < max) {
			var k int
			if err := conn.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").Scan(&k); err != nil {
				if ctx.Err() == nil {
					t.Errorf("terminator: %v", err)
				}
				return
			}
			if k > 0 {
				killed.Add(int32(k))
				if after != nil {
					after()
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return done
}

// fn commits its own transaction (tx.Commit, as in pgx code written for
// BeginFunc-less flows, or Exec("COMMIT")), and the connection is lost
// with that COMMIT in flight after the commit record was written. RunInTx
// takes fn's error for a node lost before COMMIT and runs fn again: the
// row is written twice. The promise: fn runs again "when, and only when,
// nothing committed"; a COMMIT of unknown outcome is never run again.
func TestRunInTxFnsOwnCommitLostIsNotRunAgain(t *testing.T) {
	for _, tc := range []struct {
		name   string
		commit func(ctx context.Context, tx pgx.Tx) error
	}{
		{"tx.Commit", func(ctx context.Context, tx pgx.Tx) error { return tx.Commit(ctx) }},
		{"Exec COMMIT", func(ctx context.Context, tx pgx.Tx) error { _, err := tx.Exec(ctx, "COMMIT"); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			_, m, n1, stop, restore := syncStoppableCluster(t, ctx, "CREATE TABLE transfers (n serial PRIMARY KEY, note text)")
			stop()
			var killed atomic.Int32
			done := terminateSyncWaiters(t, ctx, n1, 1, &killed, restore)

			runs := 0
			var classes []failover.Class
			var errs []error
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3, OnRetry: func(_ int, err error, c failover.Class, _ time.Duration) {
				classes = append(classes, c)
				errs = append(errs, err)
			}}, func(ctx context.Context, tx pgx.Tx) error {
				runs++
				if _, err := tx.Exec(ctx, "INSERT INTO transfers (note) VALUES ('pay 100')"); err != nil {
					return err
				}
				return tc.commit(ctx, tx)
			})
			<-done
			t.Logf("RunInTx: %v; runs %d; retried with classes %v errors %v", err, runs, classes, errs)
			require.EqualValues(t, 1, killed.Load(), "the first COMMIT's connection was terminated in its SyncRep wait")

			var k int
			require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM transfers").Scan(&k))
			t.Logf("rows committed: %d", k)
			assert.Equal(t, 1, runs, "fn ran again after its own COMMIT may have (and did) commit")
			assert.Equal(t, 1, k, "the transfer was committed twice")
		})
	}
}

// A routed autocommit write whose connection is lost after the server
// committed it: the error is a *NodeLostError with MayHaveRun (right), but
// failover.Classify calls it NodeDown, a Retryable class documented as
// "the transaction did not commit". A service that retries what
// Classify(err).Retryable() accepts writes twice.
func TestClassifyRoutedWriteLostMayHaveCommitted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, m, n1, stop, restore := syncStoppableCluster(t, ctx, "CREATE TABLE events (n serial PRIMARY KEY)")
	stop()
	var killed atomic.Int32
	done := terminateSyncWaiters(t, ctx, n1, 1, &killed, restore)

	_, err := m.Master().Exec(ctx, "INSERT INTO events DEFAULT VALUES")
	<-done
	require.Error(t, err)
	t.Logf("routed Exec: %v", err)
	var le *hasql.NodeLostError
	require.True(t, errors.As(err, &le), "a NodeLostError: %v", err)
	assert.True(t, le.MayHaveRun, "the statement may have run")
	var k int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM events").Scan(&k))
	require.Equal(t, 1, k, "the insert committed")
	c := failover.Classify(err)
	t.Logf("Classify: %v (retryable %v); ClassifyCommit: %v", c, c.Retryable(), failover.ClassifyCommit(err))
	assert.False(t, c.Retryable(), "Classify says %v, retryable, for a write that committed", c)
	assert.Equal(t, failover.CommitUnknown, c)
	assert.True(t, le.Autocommit, "a routed statement runs outside a transaction")
}

// fn makes a write through a routed statement (another connection: an
// audit log, a second cluster's Manager) and that connection is lost after
// the write committed. The transaction's own connection is open and well;
// RunInTx's documentation says an error "while the transaction's
// connection is still open (a call to another service) is fn's own, and is
// returned as it is". A *NodeLostError from any connection is taken for
// the transaction's master going down instead, and fn runs again: the
// audit row (which says may have run) is written again each time.
func TestRunInTxLossOfAnotherConnectionIsFnsOwn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, m, n1, stop, _ := syncStoppableCluster(t, ctx, "CREATE TABLE orders (n serial PRIMARY KEY)", "CREATE TABLE audit (n serial PRIMARY KEY)")
	stop()
	tctx, tcancel := context.WithCancel(ctx)
	var killed atomic.Int32
	done := terminateSyncWaiters(t, tctx, n1, 0, &killed, nil)

	runs := 0
	var txConnClosed []bool
	err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
		runs++
		// The transaction's own COMMIT does not wait for the standby.
		if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = local"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO orders DEFAULT VALUES"); err != nil {
			return err
		}
		_, err := m.Master().Exec(ctx, "INSERT INTO audit DEFAULT VALUES")
		txConnClosed = append(txConnClosed, tx.Conn().IsClosed())
		return err
	})
	tcancel()
	<-done
	t.Logf("RunInTx: %v; runs %d; tx conn closed at fn's return: %v; terminated %d", err, runs, txConnClosed, killed.Load())
	var audit, orders int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM audit").Scan(&audit))
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&orders))
	t.Logf("audit rows %d, orders %d", audit, orders)
	assert.Equal(t, 1, runs, "fn ran again although its transaction's connection was open")
	assert.Equal(t, 1, audit, "the audit write (MayHaveRun) was made again")
	var le *hasql.NodeLostError
	assert.True(t, errors.As(err, &le) && le.MayHaveRun, "fn's own error, as it is: %v", err)
}

// fn returns its own error (a declined payment) while the master is
// unresponsive; the rollback RunInTx makes gives up after 1 s and pgx
// closes the connection; classifyInTx then takes fn's own error for the
// connection's failure (Permanent, not a PgError, connection closed) and
// runs fn again. The documented rule: fn's own errors are returned as they
// are, after a rollback.
func TestRunInTxOwnErrorStaysWhenRollbackTimesOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1 := c.Nodes()[0]
	m := readyManager(t, ctx, c, 1, "CREATE TABLE charges (n serial PRIMARY KEY)")
	errDeclined := errors.New("payment declined by the card network")

	runs := 0
	var classes []failover.Class
	err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3, OnRetry: func(_ int, _ error, c failover.Class, _ time.Duration) {
		classes = append(classes, c)
		_ = n1.Resume()
	}}, func(ctx context.Context, tx pgx.Tx) error {
		runs++
		if _, err := tx.Exec(ctx, "INSERT INTO charges DEFAULT VALUES"); err != nil {
			return err
		}
		if runs == 1 {
			// The card network is called (not repeatable) and declines;
			// meanwhile the master stalls (SIGSTOP).
			require.NoError(t, n1.Pause())
		}
		return errDeclined
	})
	_ = n1.Resume()
	t.Logf("RunInTx: %v; runs %d; retried as %v", err, runs, classes)
	assert.Equal(t, 1, runs, "fn ran again after returning its own error")
	assert.Same(t, errDeclined, err)
}

// Control (expected to pass): the same loss on RunInTx's own COMMIT is
// reported as ErrCommitUnknown and fn is not run again.
func TestRunInTxCommitTerminatedInSyncWait(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, m, n1, stop, restore := syncStoppableCluster(t, ctx, "CREATE TABLE transfers (n serial PRIMARY KEY, note text)")
	stop()
	var killed atomic.Int32
	done := terminateSyncWaiters(t, ctx, n1, 1, &killed, restore)
	runs := 0
	err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
		runs++
		_, err := tx.Exec(ctx, "INSERT INTO transfers (note) VALUES ('pay 100')")
		return err
	})
	<-done
	t.Logf("RunInTx: %v; runs %d", err, runs)
	var k int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM transfers").Scan(&k))
	assert.Equal(t, 1, runs)
	assert.Equal(t, 1, k)
	assert.ErrorIs(t, err, failover.ErrCommitUnknown)
}

// stmtEndTracer calls hook, when set, at the end of each statement.
type stmtEndTracer struct {
	hook atomic.Pointer[func(conn *pgx.Conn, sql string, err error)]
}

type stmtSQLKey struct{}

func (r *stmtEndTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, stmtSQLKey{}, data.SQL)
}

func (r *stmtEndTracer) TraceQueryEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryEndData) {
	if h := r.hook.Load(); h != nil {
		sql, _ := ctx.Value(stmtSQLKey{}).(string)
		(*h)(conn, sql, data.Err)
	}
}

// terminateAndWait ends pid's session from a connection of its own to
// master and waits until the server has ended it.
func terminateAndWait(t *testing.T, ctx context.Context, master *testcluster.Node, pid uint32) {
	conn, err := master.Conn(ctx)
	if err != nil {
		t.Errorf("terminate: %v", err)
		return
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", int32(pid)); err != nil {
		t.Errorf("terminate: %v", err)
		return
	}
	for ctx.Err() == nil {
		var k int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", int32(pid)).Scan(&k); err != nil || k == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func tracedManager(t *testing.T, ctx context.Context, c *testcluster.Cluster, tr *stmtEndTracer, setup ...string) *hasql.Manager {
	t.Helper()
	return preparedManager(t, ctx, c, 1, tr, nil, setup...)
}

// preparedManager starts a Manager on c whose pool connections have tr as
// their tracer (nil: none) and the statements of prepare (name, SQL)
// prepared as they connect, as an application's AfterConnect does; it
// waits for the master and replicas replicas, and runs setup on the
// master.
func preparedManager(t *testing.T, ctx context.Context, c *testcluster.Cluster, replicas int, tr pgx.QueryTracer, prepare [][2]string, setup ...string) *hasql.Manager {
	t.Helper()
	return preparedManagerAt(t, ctx, c.DSN(), replicas, tr, prepare, setup...)
}

// preparedManagerAt is preparedManager on the connection string dsn.
func preparedManagerAt(t *testing.T, ctx context.Context, dsn string, replicas int, tr pgx.QueryTracer, prepare [][2]string, setup ...string) *hasql.Manager {
	t.Helper()
	m, err := hasql.New(ctx, dsn, hasql.WithLogger(testLogger(t)), hasql.WithConfigureNode(func(_ hasql.NodeConfig, cfg *pgxpool.Config) error {
		if tr != nil {
			cfg.ConnConfig.Tracer = tr
		}
		if len(prepare) > 0 {
			cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
				for _, p := range prepare {
					if _, err := conn.Prepare(ctx, p[0], p[1]); err != nil {
						return err
					}
				}
				return nil
			}
		}
		return nil
	}))
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, replicas))
	for _, sql := range setup {
		_, err := m.Master().Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	return m
}

// ExecToken's write commits; the connection is then lost (the session is
// terminated: an operator, a pooler, a restart) before the token is read.
// The error unwraps to ErrTokenUnread, documented as "the write is done:
// do not run the write again". failover.Classify calls it a retryable
// class (RoleChanged for the 57P01 the server sent, NodeDown for a reset):
// a service that retries Classify(err).Retryable() writes twice.
func TestClassifyTokenUnreadIsDone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1 := c.Nodes()[0]
	tr := &stmtEndTracer{}
	m := tracedManager(t, ctx, c, tr, "CREATE TABLE comments (n serial PRIMARY KEY)")

	var fired atomic.Bool
	hook := func(conn *pgx.Conn, sql string, err error) {
		if err == nil && sql == "INSERT INTO comments DEFAULT VALUES" && fired.CompareAndSwap(false, true) {
			terminateAndWait(t, ctx, n1, conn.PgConn().PID())
		}
	}
	tr.hook.Store(&hook)
	_, _, err := m.Master().ExecToken(ctx, "INSERT INTO comments DEFAULT VALUES")
	tr.hook.Store(nil)
	require.True(t, fired.Load())
	require.Error(t, err)
	t.Logf("ExecToken: %v", err)
	require.ErrorIs(t, err, hasql.ErrTokenUnread, "the write is done, the token unread")
	var k int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM comments").Scan(&k))
	require.Equal(t, 1, k, "the write committed")
	cl := failover.Classify(err)
	t.Logf("Classify: %v (retryable %v); ClassifyCommit: %v", cl, cl.Retryable(), failover.ClassifyCommit(err))
	assert.False(t, cl.Retryable(), "Classify says %v (retryable) for ErrTokenUnread: a write that is done", cl)
}

// hasql.CommitToken is the documented way to get a token for a
// transaction, and accepts a *pgxpool.Conn's transaction: RunInTx's. Used
// in fn:
//   - the commit succeeds and the token is read: RunInTx's own Commit then
//     meets pgx.ErrTxClosed and reports ErrCommitUnknown for a transaction
//     that committed once, for sure;
//   - the commit succeeds and the token cannot be read (the session is
//     terminated right after COMMIT): CommitToken says ErrTokenUnread (the
//     write is done, do not run it again); RunInTx runs fn again and the
//     transaction commits twice.
func TestRunInTxWithCommitToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1 := c.Nodes()[0]
	tr := &stmtEndTracer{}
	m := tracedManager(t, ctx, c, tr, "CREATE TABLE jobs (n serial PRIMARY KEY)")
	count := func() int {
		var k int
		require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM jobs").Scan(&k))
		return k
	}
	fn := func(runs *int) func(ctx context.Context, tx pgx.Tx) error {
		return func(ctx context.Context, tx pgx.Tx) error {
			*runs++
			if _, err := tx.Exec(ctx, "INSERT INTO jobs DEFAULT VALUES"); err != nil {
				return err
			}
			tok, err := hasql.CommitToken(ctx, tx)
			t.Logf("run %d: CommitToken: %v %v", *runs, tok, err)
			return err
		}
	}

	t.Run("clean", func(t *testing.T) {
		runs := 0
		before := count()
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, fn(&runs))
		t.Logf("RunInTx: %v; runs %d; committed %d", err, runs, count()-before)
		assert.Equal(t, 1, count()-before)
		assert.NoError(t, err, "one transaction, committed once, reported as in doubt")
	})
	t.Run("token lost after commit", func(t *testing.T) {
		runs := 0
		before := count()
		var fired atomic.Bool
		hook := func(conn *pgx.Conn, sql string, err error) {
			if err == nil && sql == "commit" && fired.CompareAndSwap(false, true) {
				terminateAndWait(t, ctx, n1, conn.PgConn().PID())
			}
		}
		tr.hook.Store(&hook)
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, fn(&runs))
		tr.hook.Store(nil)
		require.True(t, fired.Load())
		t.Logf("RunInTx: %v; runs %d; committed %d", err, runs, count()-before)
		assert.Equal(t, 1, runs, "fn ran again after CommitToken said the write is done")
		assert.Equal(t, 1, count()-before, "the transaction committed more than once")
	})
}
