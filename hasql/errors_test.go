package hasql_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// backendPids lists the client backends on n whose query matches like
// (the check connections' excluded).
func backendPids(t *testing.T, ctx context.Context, n *testcluster.Node, where string) []int {
	t.Helper()
	conn, err := n.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND `+where)
	require.NoError(t, err)
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	return pids
}

// waitGone waits until none of pids is a backend on n any more.
func waitGone(t *testing.T, ctx context.Context, n *testcluster.Node, pids []int) {
	t.Helper()
	conn, err := n.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	for {
		var left int
		require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)`, pids).Scan(&left))
		if left == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("backends %v still there: %v", pids, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitAppGone waits until the application has no pooled session on n left:
// those listed, and any the pool opened in the background meanwhile (it
// keeps MinIdleConns idle connections) and that a first listing missed.
// Such a connection, idle for almost idle_session_timeout when handed out,
// would be ended by the server after the hand-out, which is no dead
// session reaching the caller but the server's timer racing the statement.
func waitAppGone(t *testing.T, ctx context.Context, n *testcluster.Node) {
	t.Helper()
	for {
		pids := appPids(t, ctx, n)
		if len(pids) == 0 {
			return
		}
		waitGone(t, ctx, n, pids)
	}
}

// appPids lists the pids of the pooled connections of the application
// (not the checks) on n.
func appPids(t *testing.T, ctx context.Context, n *testcluster.Node) []int {
	return backendPids(t, ctx, n, `application_name = 'pgxha-errors-test'`)
}

// TestDeadPooledSessions: a pooled session that the server ended while it
// was idle never reaches the caller, whether the server timed it out
// (idle_session_timeout), a DBA terminated it, or the server restarted: the
// first statement after it succeeds, on an acquired connection (no retry
// can hide it there) and through a Querier.
func TestDeadPooledSessions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	master := c.Nodes()[0]

	// Run on a connection the Manager hands out, no retry of ours.
	onAcquired := func(m *hasql.Manager) error {
		conn, err := m.AcquireMaster(ctx)
		if err != nil {
			return err
		}
		defer conn.Release()
		_, err = conn.Exec(ctx, "SELECT 1")
		return err
	}

	t.Run("idle_session_timeout", func(t *testing.T) {
		dsn := withParams(c.DSN(), "idle_session_timeout", "400", "application_name", "pgxha-errors-test")
		m := newManager(t, ctx, dsn)
		require.NoError(t, m.WaitReady(ctx, 1, 0))
		for range 3 {
			require.NoError(t, onAcquired(m))
			_, err := m.Master().Exec(ctx, "SELECT 1")
			require.NoError(t, err)
			// Until the server timed out every pooled session.
			require.NotEmpty(t, appPids(t, ctx, master))
			waitAppGone(t, ctx, master)
			require.NoError(t, onAcquired(m), "the first statement after the idle sessions timed out")
			waitAppGone(t, ctx, master)
			_, err = m.Master().Exec(ctx, "SELECT 1")
			require.NoError(t, err, "the first routed statement after the idle sessions timed out")
		}
	})

	t.Run("pg_terminate_backend", func(t *testing.T) {
		dsn := withParams(c.DSN(), "application_name", "pgxha-errors-test", "pool_min_idle_conns", "2")
		m := newManager(t, ctx, dsn)
		require.NoError(t, m.WaitReady(ctx, 1, 0))
		for i := range 3 {
			require.NoError(t, onAcquired(m))
			// Every session of the user, the checks' included, as a DBA
			// who rotates a password does.
			pids := backendPids(t, ctx, master, `usename = current_user`)
			require.NotEmpty(t, pids)
			execOn(t, ctx, master, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE backend_type = 'client backend' AND usename = current_user AND pid <> pg_backend_pid()`)
			waitGone(t, ctx, master, pids)
			if i%2 == 0 {
				require.NoError(t, onAcquired(m), "the first statement after the terminations")
			} else {
				_, err := m.Master().Exec(ctx, "SELECT 1")
				require.NoError(t, err, "the first routed statement after the terminations")
			}
		}
	})

	t.Run("server restart", func(t *testing.T) {
		dsn := withParams(c.DSN(), "application_name", "pgxha-errors-test", "pool_min_idle_conns", "2")
		m := newManager(t, ctx, dsn)
		require.NoError(t, m.WaitReady(ctx, 1, 0))
		require.NoError(t, onAcquired(m))
		pids := appPids(t, ctx, master)
		require.NotEmpty(t, pids)
		require.NoError(t, master.Stop())
		require.NoError(t, master.Start())
		require.NoError(t, m.WaitReady(ctx, 1, 0))
		require.NoError(t, onAcquired(m), "the first statement after the restart")
		_, err := m.Master().Exec(ctx, "SELECT 1")
		require.NoError(t, err)
	})

	t.Run("the errors are what the retry rules say", func(t *testing.T) {
		// What a plain connection gets from a session the server ended
		// while idle: 57P05, which NeverRan accepts (the server ended the
		// session before reading the statement).
		cfg, err := pgx.ParseConfig(withParams(master.DSN(), "idle_session_timeout", "100"))
		require.NoError(t, err)
		conn, err := pgx.ConnectConfig(ctx, cfg)
		require.NoError(t, err)
		defer conn.Close(ctx)
		var pid int
		require.NoError(t, conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid))
		waitGone(t, ctx, master, []int{pid})
		_, err = conn.Exec(ctx, "SELECT 1")
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		assert.Equal(t, "57P05", pgErr.Code)
		assert.True(t, hasql.NeverRan(err))
		assert.True(t, hasql.SessionEnded(err))
	})
}

// TestAcquireTimeout: an acquire whose context has no deadline ends after
// Config.AcquireTimeout with the NoNodeError that says why.
func TestAcquireTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_acquire_timeout", "300ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 0))

	done := make(chan error, 1)
	go func() {
		// No replica, and a context with no deadline, as a net/http
		// handler has.
		_, err := m.Replica().Exec(context.Background(), "SELECT 1")
		done <- err
	}()
	select {
	case err := <-done:
		require.Error(t, err)
		var ne *hasql.NoNodeError
		require.ErrorAs(t, err, &ne)
		assert.ErrorIs(t, err, hasql.ErrNoReplica)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "hasql_acquire_timeout")
		assert.Contains(t, err.Error(), "300ms")
	case <-ctx.Done():
		t.Fatal("the acquire with no deadline did not end")
	}

	// A deadline of the caller's own is the only bound.
	dctx, dcancel := context.WithTimeout(ctx, 600*time.Millisecond)
	defer dcancel()
	_, err := m.AcquireReplica(dctx)
	require.ErrorIs(t, err, hasql.ErrNoReplica)
	assert.NotContains(t, err.Error(), "hasql_acquire_timeout")
}

// TestAcquireTimeoutFullPool: the bound holds for an acquire that waits in
// a node's full pool too.
func TestAcquireTimeoutFullPool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_acquire_timeout", "300ms", "pool_max_conns", "1"))
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	held, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	defer held.Release()

	done := make(chan error, 1)
	go func() {
		_, err := m.Master().Exec(context.Background(), "SELECT 1")
		done <- err
	}()
	select {
	case err := <-done:
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "hasql_acquire_timeout")
	case <-ctx.Done():
		t.Fatal("the acquire with no deadline waited in the full pool for good")
	}
	held.Release()
	_, err = m.Master().Exec(ctx, "SELECT 1")
	require.NoError(t, err, "the pool serves again once its connection is back")
}

// recordingHandler keeps the messages logged at Warn and above.
type recordingHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	h.mu.Lock()
	h.msgs = append(h.msgs, b.String())
	h.mu.Unlock()
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) count(sub string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := 0
	for _, m := range h.msgs {
		if strings.Contains(m, sub) {
			k++
		}
	}
	return k
}

// failedLogins counts the failed password logins of user in n's server log.
func failedLogins(n *testcluster.Node, user string) int {
	return strings.Count(n.Logs(1_000_000), `password authentication failed for user "`+user+`"`)
}

// TestWrongPassword: a Manager with a wrong password does not storm the
// servers with logins (counted in their logs): its connects back off per
// node, the failure is logged once per node and shown in NodeStatus, and a
// password that becomes right is picked up within seconds.
func TestWrongPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	execOn(t, ctx, c.Nodes()[0], `CREATE ROLE rotated LOGIN PASSWORD 'Old-Secret-1'`)

	const user, wrong = "rotated", "New-Secret-2"
	nodes := c.Nodes()
	before := make([]int, len(nodes))
	for i, n := range nodes {
		before[i] = failedLogins(n, user)
	}
	cfg, err := hasql.ParseConfig(c.DSN())
	require.NoError(t, err)
	cfg.PoolConfig.ConnConfig.User, cfg.PoolConfig.ConnConfig.Password = user, wrong
	cfg.PoolConfig.MinConns = 2 // the pools try to connect too
	h := &recordingHandler{}
	cfg.Logger = slog.New(h)
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()

	// Callers keep trying, as a service's handlers do, for 4 seconds.
	window, wcancel := context.WithTimeout(ctx, 4*time.Second)
	defer wcancel()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for window.Err() == nil {
				actx, acancel := context.WithTimeout(window, 50*time.Millisecond)
				_, _ = m.Master().Exec(actx, "SELECT 1")
				acancel()
			}
		}()
	}
	wg.Wait()

	total := 0
	for i, n := range nodes {
		k := failedLogins(n, user) - before[i]
		t.Logf("%s: %d failed logins in 4s", n.Name(), k)
		total += k
		// Backing off from 250ms, doubling, to 5s: about 5 in 4s, one per
		// attempt of the gate (pgconn may try a second TLS variant).
		assert.LessOrEqual(t, k, 12, "failed logins on %s", n.Name())
		assert.GreaterOrEqual(t, k, 1)
	}
	for _, st := range m.Nodes() {
		var ae *hasql.AuthError
		require.ErrorAs(t, st.AuthError, &ae, "AuthError of %s", st.Addr)
		assert.Equal(t, "28P01", ae.Code)
		assert.Equal(t, st.Addr, ae.Addr)
		var pgErr *pgconn.PgError
		assert.ErrorAs(t, st.LastError, &pgErr)
		assert.False(t, st.AuthRetryAt.IsZero())
		assert.Equal(t, 1, h.count("refused the credentials; connects to it back off until one succeeds addr="+st.Addr+" "), "logged once for %s", st.Addr)
		assert.NotContains(t, errString(st.AuthError)+errString(st.LastError), wrong)
	}
	for _, msg := range h.msgs {
		assert.NotContains(t, msg, wrong)
	}

	// The secret rotates: the password the Manager has becomes right.
	execOn(t, ctx, nodes[0], `ALTER ROLE rotated PASSWORD '`+wrong+`'`)
	rotated := time.Now()
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	require.NoError(t, m.WaitReady(rctx, 1, 0), "picked up after the rotation")
	t.Logf("the rotated password was picked up after %s", time.Since(rotated).Round(time.Millisecond))
	_, err = m.Master().Exec(ctx, "SELECT 1")
	require.NoError(t, err)
	for _, st := range m.Nodes() {
		if st.Role == hasql.RoleMaster {
			assert.Nil(t, st.AuthError, "cleared on %s once a connect succeeded", st.Addr)
		}
	}
	assert.GreaterOrEqual(t, h.count("accepts the credentials again"), 1)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestNodeLost: statements in flight on a master that dies fail with an
// error that says so (ErrNodeLost, the node, its role, that the statement
// may have run) and still unwraps to pgx's error, routed or on an
// acquired connection.
func TestNodeLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	nodes := c.Nodes()
	master := nodes[0]
	m := newManager(t, ctx, withParams(c.DSN(), "application_name", "pgxha-errors-test"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	t.Run("partitioned", func(t *testing.T) {
		// A statement on a master that stops answering ends with the
		// caller's deadline; by then the Manager has found the node
		// unwell: the error says the node was lost, and still matches
		// the deadline.
		sctx, scancel := context.WithTimeout(ctx, 4*time.Second)
		defer scancel()
		done := make(chan error, 1)
		go func() {
			_, err := m.Master().Exec(sctx, "SELECT pg_sleep(60)")
			done <- err
		}()
		for len(backendPids(t, ctx, master, `query = 'SELECT pg_sleep(60)' AND state = 'active'`)) < 1 {
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
		require.NoError(t, master.Partition())
		err := <-done
		require.NoError(t, master.Heal())
		t.Logf("error: %v", err)
		require.ErrorIs(t, err, hasql.ErrNodeLost)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		var le *hasql.NodeLostError
		require.ErrorAs(t, err, &le)
		assert.Equal(t, master.Addr(), le.Addr)
		assert.Equal(t, hasql.RoleMaster, le.Role)
		assert.True(t, le.MayHaveRun)
		// Once healed, the master is back for what follows.
		execOn(t, ctx, master, `SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'`)
		require.NoError(t, m.WaitReady(ctx, 1, 2))
	})

	type outcome struct {
		name string
		err  error
	}
	results := make(chan outcome, 3)
	go func() {
		rows, err := m.Master().Query(ctx, "SELECT pg_sleep(60)")
		if err == nil {
			for rows.Next() {
			}
			err = rows.Err()
		}
		results <- outcome{"routed rows", err}
	}()
	go func() {
		_, err := m.Master().Exec(ctx, "SELECT pg_sleep(60)")
		results <- outcome{"routed", err}
	}()
	go func() {
		conn, err := m.AcquireMaster(ctx)
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT pg_sleep(60)")
			err = hasql.NodeLost(conn, err)
			conn.Release()
		}
		results <- outcome{"acquired", err}
	}()
	go func() {
		conn, err := m.AcquireMaster(ctx)
		if err == nil {
			if _, err = conn.Exec(ctx, "BEGIN"); err == nil {
				_, err = conn.Exec(ctx, "SELECT pg_sleep(60)")
			}
			err = hasql.NodeLost(conn, err)
			conn.Release()
		}
		results <- outcome{"acquired, in a transaction", err}
	}()
	// Until the statements run on the master.
	for len(backendPids(t, ctx, master, `query = 'SELECT pg_sleep(60)' AND state = 'active'`)) < 4 {
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	require.NoError(t, master.Kill())
	for range 4 {
		r := <-results
		t.Run(r.name, func(t *testing.T) {
			t.Logf("error: %v", r.err)
			require.Error(t, r.err)
			require.ErrorIs(t, r.err, hasql.ErrNodeLost)
			var le *hasql.NodeLostError
			require.ErrorAs(t, r.err, &le)
			assert.Equal(t, master.Addr(), le.Addr)
			assert.Equal(t, hasql.RoleMaster, le.Role)
			assert.True(t, le.MayHaveRun, "a statement on the master may have run")
			inTx := r.name == "acquired, in a transaction"
			assert.Equal(t, !inTx, le.Autocommit, "ran outside a transaction")
			assert.Equal(t, !inTx, strings.Contains(r.err.Error(), "may have run and committed"))
			require.Error(t, le.Err)
			assert.ErrorIs(t, r.err, le.Err, "unwraps to pgx's error")
			assert.NotErrorIs(t, le.Err, hasql.ErrNodeLost)
			assert.Contains(t, r.err.Error(), master.Addr())
			assert.Contains(t, r.err.Error(), "master")
		})
	}
}

// TestNodeLostCut: a statement on a master that stops answering, and that
// pgxha cuts off once another node is master, fails at once with a
// *NodeLostError that says pgxha cut it.
func TestNodeLostCut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	nodes := c.Nodes()
	master := nodes[0]
	m := newManager(t, ctx, c.DSN())
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	done := make(chan error, 1)
	go func() {
		// No deadline of its own: only the cut can end it.
		_, err := m.Master().Exec(ctx, "SELECT pg_sleep(120)")
		done <- err
	}()
	for len(backendPids(t, ctx, master, `query = 'SELECT pg_sleep(120)' AND state = 'active'`)) < 1 {
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	require.NoError(t, master.Partition())
	defer master.Heal()
	require.NoError(t, c.Failover(ctx, nodes[1]))
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("the statement on the old master was not cut")
	}
	t.Logf("error: %v", err)
	require.ErrorIs(t, err, hasql.ErrNodeLost)
	var le *hasql.NodeLostError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, master.Addr(), le.Addr)
	assert.Equal(t, hasql.RoleMaster, le.Role)
	assert.True(t, le.Cut, "cut by pgxha")
	assert.True(t, le.MayHaveRun)
	assert.Contains(t, err.Error(), "cut by pgxha")
}

// TestDBDeadPooledSessions: a pooled session the server ended while idle
// (57P01, 57P05) never reaches the caller through m.DB() either. It did:
// database/sql's pool handed out a connection whose session the server
// ended less than a second after its last use (pgx's stdlib pings only
// after a second idle; pgxha's look at the socket was on its pgx pools
// alone), and the statement failed with the server's 57P01 or 57P05.
func TestDBDeadPooledSessions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	master := c.Nodes()[0]
	for _, tc := range []struct {
		name   string
		target hasql.Target
		params []string
		end    func(t *testing.T, pids []int)
	}{
		{"terminate/TargetMaster", hasql.TargetMaster, nil, func(t *testing.T, pids []int) {
			execOn(t, ctx, master, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgxha-errors-test' AND pid <> pg_backend_pid()`)
		}},
		{"terminate/TargetAuto", hasql.TargetAuto, nil, func(t *testing.T, pids []int) {
			execOn(t, ctx, master, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgxha-errors-test' AND pid <> pg_backend_pid()`)
		}},
		{"idle_session_timeout/TargetMaster", hasql.TargetMaster, []string{"idle_session_timeout", "300"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := withParams(c.DSN(), append([]string{"application_name", "pgxha-errors-test"}, tc.params...)...)
			m := newManager(t, ctx, dsn)
			require.NoError(t, m.WaitReady(ctx, 1, 0))
			db := m.DB(tc.target)
			defer db.Close()
			db.SetMaxOpenConns(1)
			var failures []string
			for i := 0; i < 3; i++ {
				_, err := db.ExecContext(ctx, "SELECT 1")
				require.NoError(t, err)
				pids := appPids(t, ctx, master)
				require.NotEmpty(t, pids)
				if tc.end != nil {
					tc.end(t, pids)
					waitGone(t, ctx, master, pids)
				} else {
					waitAppGone(t, ctx, master)
				}
				_, err = db.ExecContext(ctx, "SELECT 1")
				if err != nil {
					failures = append(failures, fmt.Sprintf("round %d: %v", i, err))
				}
			}
			assert.Empty(t, failures, "the first statement through DB() after the server ended its idle pooled session")
		})
	}
}
