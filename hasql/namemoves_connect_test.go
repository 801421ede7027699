package hasql_test

// Connections being made while a node's name moves: validated against the
// server before the move, handed out after it.

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// managerResolvingWith is managerResolving with a hook on the config.
func managerResolvingWith(t *testing.T, ctx context.Context, dsn, name string, resolve func() string, tweak func(*hasql.Config)) *hasql.Manager {
	t.Helper()
	cfg, err := hasql.ParseConfig(dsn)
	require.NoError(t, err)
	cfg.PoolConfig.ConnConfig.LookupFunc = func(ctx context.Context, host string) ([]string, error) {
		if host == name {
			return []string{resolve()}, nil
		}
		return net.DefaultResolver.LookupHost(ctx, host)
	}
	cfg.Logger = quiet
	if tweak != nil {
		tweak(cfg)
	}
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	return m
}

// gate blocks connections to one host name after they were validated
// (pgconn's AfterConnect runs after ValidateConnect, where pgxha compares
// the server's start time): what an AfterConnect of the user's that does a
// round trip (registering types, SET ...) does for a moment.
type gate struct {
	prefix  string // of the remote address gated
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func newGate(prefix string) *gate {
	return &gate{prefix: prefix, entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (g *gate) hook(ctx context.Context, pc *pgconn.PgConn) error {
	if !g.armed.Load() || !strings.HasPrefix(pc.Conn().RemoteAddr().String(), g.prefix) {
		return nil
	}
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-g.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// TestReplicaConnValidatedBeforeTheNameMoved: a replica node's host
// is a name (ro.db) that reaches replica n2. A pool connection is being
// made there: it has passed the start-time comparison (n2, as the checks
// say) and is finishing its set-up (an AfterConnect of the user's). The
// name moves to n3, the node's checks follow it, and n2 is promoted: it
// follows no master. The acquire that was waiting for the connection must
// not get it: n2 is a server no check reaches. (The pool was reset when
// the checks saw n3, but puddle hands a connection made across a reset to
// its acquirer once: the check that saw n3 closes every connection that
// reached another server, this one included.)
func TestReplicaConnValidatedBeforeTheNameMoved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	g := newGate("127.0.0.51:")
	rn := newROName(t, ctx, "127.0.0.51", "127.0.0.52", []string{"pool_min_conns", "0"},
		func(cfg *hasql.Config) { cfg.PoolConfig.ConnConfig.AfterConnect = g.hook })
	m, n2 := rn.m, rn.n2

	g.armed.Store(true)
	type result struct {
		who        string
		inRecovery bool
		err        error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := m.AcquireReplica(ctx)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Release()
		var r result
		r.err = conn.QueryRow(ctx, "SELECT current_setting('cluster_name'), pg_is_in_recovery()").Scan(&r.who, &r.inRecovery)
		done <- r
	}()
	select {
	case <-g.entered:
	case <-ctx.Done():
		t.Fatal("no connection reached the gate")
	}

	rn.moveToN3(t, ctx)
	// n2 no longer follows the master.
	require.NoError(t, n2.Promote(ctx))
	g.armed.Store(false)
	close(g.release)

	r := <-done
	t.Logf("replica read: who=%q inRecovery=%v err=%v; the view: %v", r.who, r.inRecovery, r.err, m.Nodes())
	require.False(t, r.err == nil && r.who == "n2",
		"a replica read was served by n2, a promoted server that no check reaches (ro.db's checks reach n3)")
}

// TestDBReplicaConnValidatedBeforeTheNameMoved is the same with
// DB(TargetReplica): the connection DB made must reach the server the
// node's checks reach when it is handed to database/sql, besides the node
// qualifying.
func TestDBReplicaConnValidatedBeforeTheNameMoved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	g := newGate("127.0.0.53:")
	rn := newROName(t, ctx, "127.0.0.53", "127.0.0.54", nil,
		func(cfg *hasql.Config) { cfg.PoolConfig.ConnConfig.AfterConnect = g.hook })
	m, n2 := rn.m, rn.n2

	db := m.DB(hasql.TargetReplica)
	defer db.Close()
	g.armed.Store(true)
	type result struct {
		who        string
		inRecovery bool
		err        error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.err = db.QueryRowContext(ctx, "SELECT current_setting('cluster_name'), pg_is_in_recovery()").Scan(&r.who, &r.inRecovery)
		done <- r
	}()
	select {
	case <-g.entered:
	case <-ctx.Done():
		t.Fatal("no connection reached the gate")
	}
	rn.moveToN3(t, ctx)
	require.NoError(t, n2.Promote(ctx))
	g.armed.Store(false)
	close(g.release)

	r := <-done
	t.Logf("DB replica read: who=%q inRecovery=%v err=%v; the view: %v", r.who, r.inRecovery, r.err, m.Nodes())
	require.False(t, r.err == nil && r.who == "n2",
		"a DB(TargetReplica) read was served by n2, a promoted server that no check reaches (ro.db's checks reach n3)")
}

// TestMasterConnValidatedBeforeTheNameMoved is the master's side of
// TestReplicaConnValidatedBeforeTheNameMoved: the connection to n1
// passed the start-time comparison, the name moves to n2 (promoted; n1 not
// fenced) and the checks follow it. The core cuts the node's connections
// (it was master), this one included: the write must not commit on n1.
func TestMasterConnValidatedBeforeTheNameMoved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	a1, err := n1.AliasAt("127.0.0.59:0")
	require.NoError(t, err)
	port := portStr(a1)
	_, err = n2.AliasAt("127.0.0.60:" + port)
	require.NoError(t, err)

	var target atomic.Value
	target.Store("127.0.0.59") // n1
	primary := "primary.db:" + port
	dsn := strings.Replace(c.DSN(), "@"+n1.Addr()+","+n2.Addr()+"/", "@"+primary+"/", 1)
	g := newGate("127.0.0.59:")
	// No idle connection kept ready (pool_min_idle_conns): one made in the
	// background before the gate is armed would serve the acquire below.
	m := managerResolvingWith(t, ctx, withParams(dsn, "hasql_check_interval", "100ms", "pool_max_conns", "4", "pool_min_idle_conns", "0"), "primary.db",
		func() string { return target.Load().(string) },
		func(cfg *hasql.Config) { cfg.PoolConfig.ConnConfig.AfterConnect = g.hook })
	_, err = m.Master().Exec(ctx, "CREATE TABLE w (who text)")
	require.NoError(t, err)

	// Hold the idle connection so that the next acquire dials.
	held, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	g.armed.Store(true)
	done := make(chan error, 1)
	go func() {
		conn, err := m.AcquireMaster(ctx)
		if err != nil {
			done <- err
			return
		}
		defer conn.Release()
		_, err = conn.Exec(ctx, "INSERT INTO w SELECT current_setting('cluster_name')")
		done <- err
	}()
	select {
	case <-g.entered:
	case <-ctx.Done():
		t.Fatal("no connection reached the gate")
	}
	require.NoError(t, n2.Promote(ctx))
	target.Store("127.0.0.60")
	execOn(t, ctx, n1, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgxha-check'")
	require.Eventually(t, func() bool {
		st := statusAtAddr(m, primary)
		return st.Role == hasql.RoleMaster && st.Name == "n2" && st.Timeline == 2
	}, 30*time.Second, 5*time.Millisecond, "primary.db never master on n2: %v", m.Nodes())
	g.armed.Store(false)
	close(g.release)
	err = <-done
	held.Release()
	t.Logf("write through the connection validated on n1: %v", err)
	require.Zero(t, rowsOn(t, ctx, n1, "SELECT count(*) FROM w"), "the write committed on n1 after the node's checks moved to n2")
}

// TestWarmPoolFollowsAMovedName: the DSN's only host is a name
// (primary.db, a failover script's DNS record) that reaches n1, the master.
// n2 is promoted (n1, not fenced, stays writable on timeline 1) and the
// name moves to n2. The application writes steadily through a warm pool:
// no new connection is needed, and the check connection to n1 never ends.
// The checks look the name up again now and then (every 5 s): they follow
// it, and the writes go to n2. (They used to stay on n1 for as long as the
// check connection lived.)
func TestWarmPoolFollowsAMovedName(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	a1, err := n1.AliasAt("127.0.0.57:0")
	require.NoError(t, err)
	port := portStr(a1)
	_, err = n2.AliasAt("127.0.0.58:" + port)
	require.NoError(t, err)

	var target atomic.Value
	target.Store("127.0.0.57") // n1
	primary := "primary.db:" + port
	dsn := strings.Replace(c.DSN(), "@"+n1.Addr()+","+n2.Addr()+"/", "@"+primary+"/", 1)
	require.NotEqual(t, c.DSN(), dsn)
	m := managerResolving(t, ctx, withParams(dsn, "hasql_check_interval", "100ms", "pool_max_conns", "2", "pool_min_conns", "2"),
		"primary.db", func() string { return target.Load().(string) })
	_, err = m.Master().Exec(ctx, "CREATE TABLE w (who text)")
	require.NoError(t, err)

	require.NoError(t, n2.Promote(ctx))
	target.Store("127.0.0.58")
	moved := time.Now()

	served := map[string]int{}
	require.Eventually(t, func() bool {
		var who string
		if err := m.Master().QueryRow(ctx, "INSERT INTO w SELECT current_setting('cluster_name') RETURNING who").Scan(&who); err != nil {
			served["error"]++
			return false
		}
		served[who]++
		return who == "n2"
	}, time.Minute, 5*time.Millisecond, "primary.db moved to n2, the promoted master, and writes still commit on n1: %v", served)
	t.Logf("writes after the name moved (%s ago): %v; the view: %v", time.Since(moved).Round(time.Millisecond), served, statusAtAddr(m, primary))
	st := statusAtAddr(m, primary)
	require.True(t, st.Role == hasql.RoleMaster && st.Timeline == 2, "the view: %v", st)
}
