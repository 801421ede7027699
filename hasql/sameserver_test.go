package hasql_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/checker"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestMovedNameTakesNoWrites: a node's host is a name that moves. After a
// failover the name reaches the new master; the old one comes back
// writable on the old timeline (the Manager calls it stale) and the name
// points at it again, as a stale DNS record would. The pool must not open
// connections there while the checks still run on the new master: no write
// routed to the master may commit on the stale one.
func TestMovedNameTakesNoWrites(t *testing.T) {
	movedNameTakesNoWrites(t, "127.0.0.21", "127.0.0.22", nil)
}

// movedNameTakesNoWrites is TestMovedNameTakesNoWrites with n1's and n2's
// aliases at stale and master, and configure applied to the Manager's
// configuration.
func movedNameTakesNoWrites(t *testing.T, stale, master string, configure func(*hasql.Config)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	a1, err := n1.AliasAt(stale + ":0")
	require.NoError(t, err)
	port := portStr(a1)
	_, err = n2.AliasAt(master + ":" + port)
	require.NoError(t, err)

	var target atomic.Value
	target.Store(stale)
	m := managerResolvingWith(t, ctx, withParams(
		strings.Replace(c.DSN(), "@"+n1.Addr()+","+n2.Addr()+"/", "@primary.db:"+port+","+n1.Addr()+"/", 1),
		"hasql_check_interval", "100ms"), "primary.db", func() string { return target.Load().(string) }, configure)
	_, err = m.Master().Exec(ctx, "CREATE TABLE w (who text)")
	require.NoError(t, err)

	// Failover; the name follows the new master.
	require.NoError(t, n1.Kill())
	target.Store(master)
	require.NoError(t, c.Failover(ctx, n2))
	primary := "primary.db:" + port
	require.Eventually(t, func() bool {
		st := statusOf(m, "n2")
		return st.Addr == primary && st.Role == hasql.RoleMaster && st.Timeline == 2
	}, 30*time.Second, 5*time.Millisecond, "primary.db never became master n2: %v", m.Nodes())

	// n1 comes back writable on timeline 1: the Manager calls it stale.
	require.NoError(t, n1.Start())
	require.Eventually(t, func() bool { return statusAt(m, n1).Role == hasql.RoleStaleMaster }, 30*time.Second, 5*time.Millisecond,
		"n1 never called stale: %v", m.Nodes())
	// The name points at n1 again.
	target.Store(stale)

	// Writes routed to the master, several connections held at once so
	// that the pool opens new ones. They may fail (the name reaches a stale
	// master now, and the view follows it): none may commit on n1.
	served := map[string]int{}
	for i := 0; i < 10 && served["no master"] < 4; i++ {
		var conns []*pgxpool.Conn
		for j := 0; j < 4; j++ {
			actx, acancel := context.WithTimeout(ctx, time.Second)
			conn, err := m.AcquireMaster(actx)
			acancel()
			if err != nil {
				served["no master"]++
				continue
			}
			conns = append(conns, conn)
		}
		for _, conn := range conns {
			var who string
			if err := conn.QueryRow(ctx, "INSERT INTO w SELECT current_setting('cluster_name') RETURNING who").Scan(&who); err != nil {
				served["error"]++
			} else {
				served[who]++
			}
			conn.Release()
		}
	}
	t.Logf("writes routed to the master: %v; the view: %v", served, m.Nodes())
	require.Zero(t, served["n1"], "writes routed to the master committed on n1, the stale master")
	require.Zero(t, rowsOn(t, ctx, n1, "SELECT count(*) FROM w"), "rows on the stale master")
}

// managerResolving makes a Manager for dsn whose connections resolve the
// host name to what resolve returns at each lookup (other names as the
// system does), and waits for its master.
func managerResolving(t *testing.T, ctx context.Context, dsn, name string, resolve func() string) *hasql.Manager {
	t.Helper()
	return managerResolvingWith(t, ctx, dsn, name, resolve, nil)
}

func rowsOn(t *testing.T, ctx context.Context, n *testcluster.Node, sql string) int64 {
	t.Helper()
	conn, err := n.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var k int64
	require.NoError(t, conn.QueryRow(ctx, sql).Scan(&k))
	return k
}

// TestNameOfOneServerStaysUsable: a node's name resolves, at random, to
// one of two addresses of the same server (two poolers, two addresses of a
// host, weighted DNS). Connections the pool opens through either reach the
// server the checks reach: none is refused, no transaction is cut.
func TestNameOfOneServerStaysUsable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]
	a1, err := n1.AliasAt("127.0.0.23:0")
	require.NoError(t, err)
	port := portStr(a1)
	_, err = n1.AliasAt("127.0.0.24:" + port)
	require.NoError(t, err)
	var k atomic.Int64
	m := managerResolving(t, ctx, withParams(strings.Replace(c.DSN(), "@"+n1.Addr()+"/", "@pair.db:"+port+"/", 1),
		"hasql_check_interval", "100ms", "pool_max_conn_lifetime", "200ms"),
		"pair.db", func() string { return []string{"127.0.0.23", "127.0.0.24"}[k.Add(1)%2] })
	_, err = m.Master().Exec(ctx, "CREATE TABLE pair (v int)")
	require.NoError(t, err)
	// Until the pool has opened connections through both addresses several
	// times (each lives 200 ms).
	n := 0
	for ; n < 20000 && k.Load() < 12; n++ {
		i := n
		tx, err := m.Master().Begin(ctx)
		require.NoError(t, err, "transaction %d", i)
		_, err = tx.Exec(ctx, "INSERT INTO pair VALUES ($1)", i)
		require.NoError(t, err, "transaction %d", i)
		require.NoError(t, tx.Commit(ctx), "transaction %d", i)
	}
	require.GreaterOrEqual(t, k.Load(), int64(12), "the name was looked up %d times", k.Load())
	assert.EqualValues(t, n, rowsOn(t, ctx, n1, "SELECT count(*) FROM pair"))
}

// gatedChecker fails the first check after calling wait (the check
// connection closes and opens afresh for the next): the node has no role
// until the second.
type gatedChecker struct {
	checker.Checker
	wait   func(context.Context)
	opened atomic.Bool
}

func (g *gatedChecker) Check(ctx context.Context, conn *pgx.Conn) (checker.Result, error) {
	if !g.opened.Load() {
		g.wait(ctx)
		g.opened.Store(true)
		return checker.Result{}, errors.New("gated")
	}
	return g.Checker.Check(ctx, conn)
}

// TestConnsOpenedBeforeTheFirstCheckAreCompared: the pool opens its
// pool_min_conns connections as the Manager starts, before the node's
// first check, through a name that reaches a stale master (writable on
// the old timeline); by the first check the name reaches the new master.
// The connections opened before had nothing to be compared with: they
// must not serve the writes routed to the master the check found.
func TestConnsOpenedBeforeTheFirstCheckAreCompared(t *testing.T) {
	served := earlyConns(t, earlyCase{stale: "127.0.0.25", master: "127.0.0.26"})
	require.Positive(t, served["n2"], "no write reached n2: %v", served)
}

// earlyCase is a variant of TestConnsOpenedBeforeTheFirstCheckAreCompared.
type earlyCase struct {
	stale, master string // loopback addresses for n1's and n2's aliases
	cluster       testcluster.Options
	params        []string            // more DSN parameters
	configure     func(*hasql.Config) // more configuration
	// gateSQL counts the pool's connections open on n1 (application_name
	// early-pool), the name moves once it finds 2.
	gateSQL string
}

// earlyConns runs the scenario of TestConnsOpenedBeforeTheFirstCheckAreCompared
// and returns which servers the 8 writes routed to the master reached,
// asserting that none committed on the stale master.
func earlyConns(t *testing.T, ec earlyCase) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ec.cluster.Replicas = 1
	c := testcluster.New(t, ec.cluster)
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	a1, err := n1.AliasAt(ec.stale + ":0")
	require.NoError(t, err)
	port := portStr(a1)
	_, err = n2.AliasAt(ec.master + ":" + port)
	require.NoError(t, err)
	// Failover to n2; n1 comes back writable on timeline 1.
	require.NoError(t, n1.Kill())
	require.NoError(t, c.Failover(ctx, n2))
	require.NoError(t, n1.Start())
	execOn(t, ctx, n2, "CREATE TABLE early (who text)")
	execOn(t, ctx, n1, "CREATE TABLE early (who text)")

	var target atomic.Value
	target.Store(ec.stale) // n1, the stale master
	params := append([]string{"pool_min_conns", "2", "application_name", "early-pool", "hasql_check_interval", "100ms"}, ec.params...)
	cfg, err := hasql.ParseConfig(withParams(strings.Replace(c.DSN(), "@"+n1.Addr()+","+n2.Addr()+"/", "@early.db:"+port+"/", 1), params...))
	require.NoError(t, err)
	cfg.PoolConfig.ConnConfig.LookupFunc = func(ctx context.Context, host string) ([]string, error) {
		if host == "early.db" {
			return []string{target.Load().(string)}, nil
		}
		return net.DefaultResolver.LookupHost(ctx, host)
	}
	if ec.configure != nil {
		ec.configure(cfg)
	}
	gateSQL := ec.gateSQL
	if gateSQL == "" {
		gateSQL = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'early-pool'"
	}
	gate := &gatedChecker{Checker: cfg.Checker}
	gate.wait = func(ctx context.Context) {
		// The pool's connections are open on n1; the name moves to n2.
		conn, err := n1.Conn(ctx)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		for ctx.Err() == nil {
			var k int
			if conn.QueryRow(ctx, gateSQL).Scan(&k) == nil && k >= 2 {
				break
			}
			select { // polled, not spun: the pool's connections need the cores
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
		target.Store(ec.master)
	}
	cfg.Checker = gate
	cfg.CheckTimeout = 30 * time.Second // the first check waits for the pool
	cfg.Logger = quiet
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	require.True(t, gate.opened.Load(), "the Manager was ready before the pool's connections were open")
	require.Equal(t, hasql.RoleMaster, m.Nodes()[0].Role, "%v", m.Nodes())
	require.EqualValues(t, 2, m.Nodes()[0].Timeline, "the checks reach n2: %v", m.Nodes())

	served := map[string]int{}
	for i := 0; i < 8; i++ {
		var who string
		if err := m.Master().QueryRow(ctx, "INSERT INTO early SELECT current_setting('cluster_name') RETURNING who").Scan(&who); err != nil {
			served["error"]++
		} else {
			served[who]++
		}
	}
	t.Logf("writes routed to the master: %v", served)
	require.Zero(t, rowsOn(t, ctx, n1, "SELECT count(*) FROM early"), "writes routed to the master committed on n1, the stale master: %v", served)
	return served
}

// TestNameMovedOffAHungMasterCutsItsConnections: a node's host is a name.
// Its server, the master, hangs with a transaction open through the node;
// the checks call the node down. The name moves to the replica, which is
// promoted, and the node's next check reaches it: the node is master
// again, on another server. The transaction's connection reaches the old
// one: when it wakes up, the commit must not land there.
func TestNameMovedOffAHungMasterCutsItsConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	a1, err := n1.AliasAt("127.0.0.27:0")
	require.NoError(t, err)
	port := portStr(a1)
	_, err = n2.AliasAt("127.0.0.28:" + port)
	require.NoError(t, err)

	var target atomic.Value
	target.Store("127.0.0.27")
	m := managerResolving(t, ctx, withParams(
		strings.Replace(c.DSN(), "@"+n1.Addr()+","+n2.Addr()+"/", "@moving.db:"+port+"/", 1),
		"hasql_check_interval", "100ms", "hasql_check_timeout", "500ms"), "moving.db", func() string { return target.Load().(string) })
	_, err = m.Master().Exec(ctx, "CREATE TABLE hung (v int)")
	require.NoError(t, err)
	tx, err := m.Master().Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "INSERT INTO hung VALUES (1)")
	require.NoError(t, err)

	require.NoError(t, n1.Pause())
	require.Eventually(t, func() bool { return m.Nodes()[0].Role != hasql.RoleMaster }, 30*time.Second, 5*time.Millisecond,
		"the hung master stayed master: %v", m.Nodes())
	target.Store("127.0.0.28")
	require.NoError(t, c.Failover(ctx, n2))
	require.Eventually(t, func() bool {
		st := m.Nodes()[0]
		return st.Role == hasql.RoleMaster && st.Timeline == 2
	}, 30*time.Second, 5*time.Millisecond, "moving.db never became master on n2: %v", m.Nodes())
	require.NoError(t, n1.Resume())

	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	err = tx.Commit(cctx)
	ccancel()
	t.Logf("commit after the name moved: %v", err)
	require.Zero(t, rowsOn(t, ctx, n1, "SELECT count(*) FROM hung"),
		"the transaction begun on the hung master committed there, after the node became master on another server (commit: %v)", err)
	require.Error(t, err, "the commit succeeded")
}
