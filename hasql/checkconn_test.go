package hasql_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/checker"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// sessionChecker is the PostgreSQL checker that also reads, on the check
// connection, the settings a DSN could have set.
type sessionChecker struct {
	mu       sync.Mutex
	settings map[string]string
	mode     pgx.QueryExecMode
}

func (c *sessionChecker) Check(ctx context.Context, conn *pgx.Conn) (checker.Result, error) {
	var timeout, idle, path string
	if err := conn.QueryRow(ctx, `SELECT current_setting('statement_timeout'),
		current_setting('idle_in_transaction_session_timeout'), current_setting('search_path')`).Scan(&timeout, &idle, &path); err != nil {
		return checker.Result{}, err
	}
	c.mu.Lock()
	c.settings = map[string]string{"statement_timeout": timeout, "idle_in_transaction_session_timeout": idle, "search_path": path}
	c.mode = conn.Config().DefaultQueryExecMode
	c.mu.Unlock()
	return checker.PostgreSQL().Check(ctx, conn)
}

// checkBackends lists the pids of the check connections on n.
func checkBackends(t *testing.T, ctx context.Context, n *testcluster.Node) []int {
	t.Helper()
	conn, err := n.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = 'pgxha-check' ORDER BY pid`)
	require.NoError(t, err)
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	return pids
}

func TestCheckConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	n2 := c.Nodes()[1]

	t.Run("it does not take the DSN's session settings", func(t *testing.T) {
		sc := &sessionChecker{}
		dsn := withParams(c.DSN(), "statement_timeout", "200ms", "idle_in_transaction_session_timeout", "1s",
			"search_path", "nowhere", "default_query_exec_mode", "simple_protocol", "hasql_check_interval", "100ms")
		m := newManager(t, ctx, dsn, hasql.WithChecker(sc))
		require.NoError(t, m.WaitReady(ctx, 1, 2))
		before := checkBackends(t, ctx, n2)
		require.Len(t, before, 1)
		time.Sleep(time.Second) // ten checks
		sc.mu.Lock()
		settings, mode := sc.settings, sc.mode
		sc.mu.Unlock()
		assert.Equal(t, "0", settings["statement_timeout"])
		assert.Equal(t, "0", settings["idle_in_transaction_session_timeout"])
		assert.Equal(t, `"$user", public`, settings["search_path"])
		assert.Equal(t, pgx.QueryExecModeCacheStatement, mode, "checks are prepared whatever the DSN's exec mode")
		assert.Equal(t, before, checkBackends(t, ctx, n2), "one check session throughout")

		// The application's own connections have the DSN's settings.
		var timeout string
		require.NoError(t, m.Replica().QueryRow(ctx, "SELECT current_setting('statement_timeout')").Scan(&timeout))
		assert.Equal(t, "200ms", timeout)
	})

	t.Run("application errors request a check and keep the check connection", func(t *testing.T) {
		cc := newCountingChecker()
		m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "30s"), hasql.WithChecker(cc))
		require.NoError(t, m.WaitReady(ctx, 1, 2))
		before := checkBackends(t, ctx, n2)
		require.Len(t, before, 1)
		checks := cc.counts(portOf(t, n2))
		for range 10 {
			qctx, qcancel := context.WithTimeout(ctx, 20*time.Millisecond)
			_, err := m.Replica(hasql.SyncOnly()).Exec(qctx, "SELECT pg_sleep(1)")
			qcancel()
			require.Error(t, err, "the client timed out")
		}
		for range 10 {
			conn, err := m.AcquireReplica(ctx, hasql.SyncOnly())
			require.NoError(t, err)
			_, err = conn.Exec(ctx, "CREATE TABLE t25006 (id int)")
			conn.Release()
			require.ErrorContains(t, err, "25006")
		}
		require.Eventually(t, func() bool { return cc.counts(portOf(t, n2)) > checks }, 10*time.Second, 10*time.Millisecond,
			"the errors had the replica checked (the interval is 30s)")
		assert.Equal(t, before, checkBackends(t, ctx, n2), "the same check connection throughout")
	})

	t.Run("connections of DB() that met 25006 are not remembered", func(t *testing.T) {
		m := newManager(t, ctx, c.DSN())
		require.NoError(t, m.WaitReady(ctx, 1, 2))
		db := m.DB(hasql.TargetReplica)
		defer db.Close()
		db.SetMaxIdleConns(0) // a new connection for every statement
		for range 30 {
			_, err := db.ExecContext(ctx, "CREATE TABLE t25006 (id int)")
			require.ErrorContains(t, err, "25006")
		}
		assert.Zero(t, hasql.PoisonedConns(m))
	})
}

// TestChecksHoldNoSnapshot: with hot_standby_feedback off, a statement that
// holds a snapshot on a replica makes WAL replay wait behind it after a
// VACUUM. A Manager checking every 3s must not delay replay: the time until
// a row committed after UPDATE and VACUUM is visible on the replica is
// compared with and without a Manager, in the same run.
func TestChecksHoldNoSnapshot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1, SyncReplicas: 1,
		Settings: map[string]string{"hot_standby_feedback": "off"}})
	master, err := c.Nodes()[0].Conn(ctx)
	require.NoError(t, err)
	defer master.Close(ctx)
	replica, err := c.Nodes()[1].Conn(ctx)
	require.NoError(t, err)
	defer replica.Close(ctx)
	_, err = master.Exec(ctx, `CREATE TABLE churn (id int PRIMARY KEY, v int);
		INSERT INTO churn SELECT g, 0 FROM generate_series(1, 1000) g;
		CREATE TABLE marks (id int PRIMARY KEY)`)
	require.NoError(t, err)
	// A synchronous commit waits for the replica's flush, not its replay:
	// wait until the replica has the table.
	for {
		var there bool
		require.NoError(t, replica.QueryRow(ctx, "SELECT to_regclass('marks') IS NOT NULL").Scan(&there))
		if there {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the replica never replayed CREATE TABLE marks")
		case <-time.After(5 * time.Millisecond):
		}
	}

	mark := 0
	delay := func() time.Duration {
		_, err := master.Exec(ctx, "UPDATE churn SET v = v + 1")
		require.NoError(t, err)
		_, err = master.Exec(ctx, "VACUUM churn")
		require.NoError(t, err)
		mark++
		begin := time.Now()
		_, err = master.Exec(ctx, "INSERT INTO marks VALUES ($1)", mark)
		require.NoError(t, err)
		for {
			var seen bool
			require.NoError(t, replica.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM marks WHERE id = $1)", mark).Scan(&seen))
			if seen {
				return time.Since(begin)
			}
			time.Sleep(time.Millisecond)
		}
	}
	median := func(k int) time.Duration {
		ds := make([]time.Duration, k)
		for i := range ds {
			ds[i] = delay()
			time.Sleep(300 * time.Millisecond)
		}
		slices.Sort(ds)
		return ds[k/2]
	}
	without := median(7)
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "3s"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	time.Sleep(500 * time.Millisecond)
	with := median(7)
	t.Logf("replay of a row after UPDATE and VACUUM: median %s without a Manager, %s with one", without, with)
	assert.Less(t, with-without, 100*time.Millisecond, "the Manager's checks do not hold back replay")
}

// sleepyChecker makes the check in flight a long statement once asleep is
// set, so that Close interrupts it.
type sleepyChecker struct{ asleep atomic.Bool }

func (c *sleepyChecker) Check(ctx context.Context, conn *pgx.Conn) (checker.Result, error) {
	if c.asleep.Load() {
		if _, err := conn.Exec(ctx, "SELECT pg_sleep(60)"); err != nil {
			return checker.Result{}, err
		}
	}
	return checker.PostgreSQL().Check(ctx, conn)
}

// A statement of the application's that its context interrupted just
// before Close (through the pool, and through DB), or while Close waits for
// the connection it runs on to be released, is cancelled on the server:
// pgconn's cancel request, dialed as it closes the connection, went out
// through the node's dialer, which Close had shut, and the server ran the
// statement to its end, the session and pgconn's cleanup outliving Close.
func TestCloseLetsCancelsOfStatementsOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	conn, err := c.Nodes()[0].Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	for _, via := range []string{"pool", "DB", "held"} {
		app := "closecancel" + via
		m, err := hasql.New(ctx, withParams(c.DSN(), "application_name", app, "hasql_check_interval", "50ms", "hasql_check_timeout", "10s"), hasql.WithLogger(quiet))
		require.NoError(t, err)
		require.NoError(t, m.WaitReady(ctx, 1, 1))
		short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
		switch via {
		case "held":
			// Close waits in pgxpool's Close for the connection, which
			// the statement's context, ended then, releases.
			cancelShort()
			stmt, interrupt := context.WithCancel(ctx)
			pc, err := m.AcquireMaster(ctx)
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() {
				_, err := pc.Exec(stmt, "SELECT pg_sleep(120)")
				pc.Release()
				done <- err
			}()
			require.Eventually(t, func() bool {
				var k int
				require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE '%pg_sleep(120)%' AND state = 'active'", app).Scan(&k))
				return k == 1
			}, 30*time.Second, 5*time.Millisecond)
			closed := make(chan struct{})
			go func() {
				m.Close()
				close(closed)
			}()
			waitStack(t, 30*time.Second, "pgxpool.(*Pool).Close")
			interrupt()
			require.Error(t, <-done)
			<-closed
		case "pool":
			_, err = m.Master().Exec(short, "SELECT pg_sleep(120)")
			cancelShort()
			require.Error(t, err)
			m.Close()
		default:
			db := m.DB(hasql.TargetAuto)
			_, err = db.ExecContext(short, "SELECT pg_sleep(120)")
			cancelShort()
			require.Error(t, err)
			require.NoError(t, db.Close())
			m.Close()
		}
		assert.Eventually(t, func() bool {
			var k int
			require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&k))
			return k == 0
		}, 30*time.Second, 10*time.Millisecond, "%s: a session of the closed Manager left on the server, pg_sleep running on", via)
	}
}

// TestCloseFinishesCancels: Close interrupts checks in flight, which sends
// the servers cancel requests; it returns only once they are done and the
// check sessions ended.
func TestCloseFinishesCancels(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	for range 3 {
		sc := &sleepyChecker{}
		m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_interval", "50ms", "hasql_check_timeout", "2m"),
			hasql.WithLogger(quiet), hasql.WithChecker(sc))
		require.NoError(t, err)
		require.NoError(t, m.WaitReady(ctx, 1, 2))
		sc.asleep.Store(true)
		conn, err := c.Nodes()[1].Conn(ctx)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			var k int
			require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE application_name = 'pgxha-check' AND query LIKE '%pg_sleep(60)%' AND state = 'active'`).Scan(&k))
			return k == 1
		}, 30*time.Second, 5*time.Millisecond)
		m.Close()
		var k int
		require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgxha-check'`).Scan(&k))
		conn.Close(ctx)
		assert.Zero(t, k, "when Close returns, the check sessions have ended, the interrupted one included")
	}
}
