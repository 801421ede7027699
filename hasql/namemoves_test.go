package hasql_test

// Names that move: a node's host is a DNS name a failover script updates,
// and connections made before a move must not serve what the node's checks
// say of the server it reaches after it (see sameserver_test.go).

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/checker"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// statusAtAddr is the status of the node whose DSN address is addr.
func statusAtAddr(m *hasql.Manager, addr string) hasql.NodeStatus {
	for _, st := range m.Nodes() {
		if st.Addr == addr {
			return st
		}
	}
	return hasql.NodeStatus{}
}

// roName is a cluster whose replica n2 is reached through the name ro.db
// (aliases of n2 and n3 on one port), and a Manager on n1 and ro.db whose
// view has ro.db a replica on n2.
type roName struct {
	n1, n2, n3 *testcluster.Node
	m          *hasql.Manager
	ro         string // ro.db's address in the DSN
	onN3       string // the address ro.db resolves to once moved
	target     atomic.Value
}

// newROName makes it, n2's alias at onN2 and n3's at onN3; params and
// configure go to the Manager.
func newROName(t *testing.T, ctx context.Context, onN2, onN3 string, params []string, configure func(*hasql.Config)) *roName {
	t.Helper()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	r := &roName{n1: c.Nodes()[0], n2: c.Nodes()[1], n3: c.Nodes()[2], onN3: onN3}
	a2, err := r.n2.AliasAt(onN2 + ":0")
	require.NoError(t, err)
	port := portStr(a2)
	_, err = r.n3.AliasAt(onN3 + ":" + port)
	require.NoError(t, err)
	r.target.Store(onN2)
	r.ro = "ro.db:" + port
	dsn := strings.Replace(c.DSN(), "@"+r.n1.Addr()+","+r.n2.Addr()+","+r.n3.Addr()+"/", "@"+r.n1.Addr()+","+r.ro+"/", 1)
	require.NotEqual(t, c.DSN(), dsn)
	r.m = managerResolvingWith(t, ctx, withParams(dsn, append([]string{"hasql_check_interval", "100ms"}, params...)...), "ro.db",
		func() string { return r.target.Load().(string) }, configure)
	r.waitReplicaOn(t, "n2")
	return r
}

// waitReplicaOn waits for the view to have ro.db a replica on the server
// named name.
func (r *roName) waitReplicaOn(t *testing.T, name string) {
	t.Helper()
	require.Eventually(t, func() bool {
		st := statusAtAddr(r.m, r.ro)
		return st.Role.IsReplica() && st.Name == name
	}, 30*time.Second, 5*time.Millisecond, "ro.db never a replica on %s: %v", name, r.m.Nodes())
}

// moveToN3 moves the name to n3: the check connection to n2 ends, and the
// next check reaches n3.
func (r *roName) moveToN3(t *testing.T, ctx context.Context) {
	t.Helper()
	r.target.Store(r.onN3)
	execOn(t, ctx, r.n2, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgxha-check'")
	r.waitReplicaOn(t, "n3")
}

// TestDBReplicaConnAfterTheNameMoved: a replica node's host is a name
// (ro.db) that reaches replica n2; a DB(TargetReplica) connection is opened
// there and stays idle in database/sql's pool. The name moves to replica
// n3 and the node's checks follow it. n2 then stops following the master
// (promoted). database/sql must not reuse the connection to n2: its node
// still qualifies, but n2 is a server no check reaches (it used to serve
// the reads: the core cuts only a node that may have taken writes, and
// database/sql's pool is not the node's).
func TestDBReplicaConnAfterTheNameMoved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := newROName(t, ctx, "127.0.0.31", "127.0.0.32", nil, nil)
	m, n2 := r.m, r.n2

	db := m.DB(hasql.TargetReplica)
	defer db.Close()
	var who string
	var inRecovery bool
	require.NoError(t, db.QueryRowContext(ctx, "SELECT current_setting('cluster_name'), pg_is_in_recovery()").Scan(&who, &inRecovery))
	require.Equal(t, "n2", who)

	r.moveToN3(t, ctx)

	// n2 no longer follows the master.
	require.NoError(t, n2.Promote(ctx))

	served := map[string]int{}
	for i := 0; i < 5; i++ {
		if err := db.QueryRowContext(ctx, "SELECT current_setting('cluster_name'), pg_is_in_recovery()").Scan(&who, &inRecovery); err != nil {
			served["error"]++
			continue
		}
		if !inRecovery {
			who += " (not in recovery)"
		}
		served[who]++
	}
	t.Logf("DB(TargetReplica) reads served by: %v; the view: %v", served, m.Nodes())
	for k := range served {
		require.False(t, strings.HasPrefix(k, "n2"), "DB(TargetReplica) reads were served by n2, which no check reaches and which follows no master: %v", served)
	}
}

// wrapConn is what a user's AfterNetConnect may return (a byte counter, a
// tracing wrapper): another net.Conn around the network's.
type wrapConn struct{ net.Conn }

// TestEarlyConnsWithAfterNetConnect is TestConnsOpenedBeforeTheFirstCheckAreCompared
// with a pgx AfterNetConnect hook set by the user: the connection pgx
// validates is the hook's wrapper, under which pgxha cannot look to keep
// the start time of its server; the first check resets the pool instead
// (the writes used to commit on the stale master).
func TestEarlyConnsWithAfterNetConnect(t *testing.T) {
	earlyConns(t, earlyCase{stale: "127.0.0.35", master: "127.0.0.36", configure: func(cfg *hasql.Config) {
		cfg.PoolConfig.ConnConfig.AfterNetConnect = func(ctx context.Context, _ *pgconn.Config, nc net.Conn) (net.Conn, error) {
			return wrapConn{nc}, nil
		}
	}})
}

// TestDBMasterConnAfterTheNodeCameBackOnAnotherServer: the master node's
// host is a name (primary.db) that reaches n1; a DB(TargetMaster)
// connection is open there, idle in database/sql's pool. The node's check
// connection ends and the name reaches, for a moment, an address that
// refuses (the failover tooling moved it before the new master listens):
// the node is down. n2 is promoted (n1, never fenced, stays writable on
// timeline 1) and the name reaches it: the node comes back, on another
// server, as master. The DB() connection to n1 must not take the writes
// routed to the master (it did: the cut on a change of server asked for a
// node that was up at its previous check).
func TestDBMasterConnAfterTheNodeCameBackOnAnotherServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	a1, err := n1.AliasAt("127.0.0.41:0")
	require.NoError(t, err)
	port := portStr(a1)
	_, err = n2.AliasAt("127.0.0.42:" + port)
	require.NoError(t, err)

	var target atomic.Value
	target.Store("127.0.0.41") // n1
	primary := "primary.db:" + port
	dsn := strings.Replace(c.DSN(), "@"+n1.Addr()+","+n2.Addr()+"/", "@"+primary+"/", 1)
	require.NotEqual(t, c.DSN(), dsn)
	m := managerResolving(t, ctx, withParams(dsn, "hasql_check_interval", "100ms"), "primary.db",
		func() string { return target.Load().(string) })
	_, err = m.Master().Exec(ctx, "CREATE TABLE w (who text)")
	require.NoError(t, err)

	db := m.DB(hasql.TargetMaster)
	defer db.Close()
	var who string
	require.NoError(t, db.QueryRowContext(ctx, "INSERT INTO w SELECT current_setting('cluster_name') RETURNING who").Scan(&who))
	require.Equal(t, "n1", who)
	before := rowsOn(t, ctx, n1, "SELECT count(*) FROM w")

	// The name reaches an address that refuses; the check connection ends.
	target.Store("127.0.0.43")
	execOn(t, ctx, n1, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgxha-check'")
	require.Eventually(t, func() bool { return !statusAtAddr(m, primary).Up }, 30*time.Second, 5*time.Millisecond,
		"primary.db never down: %v", m.Nodes())

	// n2 is promoted (n1 stays writable on timeline 1) and the name reaches it.
	require.NoError(t, n2.Promote(ctx))
	target.Store("127.0.0.42")
	require.Eventually(t, func() bool {
		st := statusAtAddr(m, primary)
		return st.Role == hasql.RoleMaster && st.Timeline == 2 && st.Name == "n2"
	}, 30*time.Second, 5*time.Millisecond, "primary.db never master on n2: %v", m.Nodes())

	served := map[string]int{}
	for i := 0; i < 5; i++ {
		if err := db.QueryRowContext(ctx, "INSERT INTO w SELECT current_setting('cluster_name') RETURNING who").Scan(&who); err != nil {
			served["error"]++
			continue
		}
		served[who]++
	}
	t.Logf("DB(TargetMaster) writes served by: %v; the view: %v", served, m.Nodes())
	require.Equal(t, before, rowsOn(t, ctx, n1, "SELECT count(*) FROM w"),
		"DB(TargetMaster) writes committed on n1, which the Manager no longer reaches (the master is n2 on timeline 2): %v", served)
}

// TestEarlyConnsOverTLS is TestConnsOpenedBeforeTheFirstCheckAreCompared
// with TLS (sslmode=require): the pool's connections are *tls.Conn over the
// tracked one, which the first check looks under; no write fails either
// (the connections it closed are replaced before anyone gets them).
func TestEarlyConnsOverTLS(t *testing.T) {
	ca := newTestCA(t)
	srvCert, srvKey := ca.issue(t, "localhost", []string{"localhost"}, net.ParseIP("127.0.0.1"))
	served := earlyConns(t, earlyCase{stale: "127.0.0.37", master: "127.0.0.38",
		cluster: testcluster.Options{ServerTLS: &testcluster.ServerTLS{CertPEM: srvCert, KeyPEM: srvKey}},
		params:  []string{"sslmode", "require"},
		gateSQL: "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE application_name = 'early-pool' AND s.ssl"})
	require.Zero(t, served["error"], "writes failed: %v", served)
}

// noStartChecker is a checker whose results carry no start time (a custom
// checker): the pool's connections are left uncompared.
type noStartChecker struct{ checker.Checker }

func (c noStartChecker) Check(ctx context.Context, conn *pgx.Conn) (checker.Result, error) {
	res, err := c.Checker.Check(ctx, conn)
	res.StartTime = time.Time{}
	return res, err
}

// TestReplicaReadRerunWithoutStartTime: a replica read whose backend is
// terminated while it runs is run again (the node that served it is a
// replica, still in recovery on the same server at a check that began
// after), also with a checker that leaves StartTime zero, whose start
// times compare as unknown on both sides. The first Manager (the default
// checker) is the control.
func TestReplicaReadRerunWithoutStartTime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n2 := c.Nodes()[1]
	killer, err := n2.Conn(ctx)
	require.NoError(t, err)
	defer killer.Close(context.Background())

	for _, zero := range []bool{false, true} {
		cfg, err := hasql.ParseConfig(withParams(c.DSN(), "hasql_check_interval", "100ms"))
		require.NoError(t, err)
		if zero {
			cfg.Checker = noStartChecker{cfg.Checker}
		}
		cfg.Logger = quiet
		m, err := hasql.NewWithConfig(ctx, cfg)
		require.NoError(t, err)
		t.Cleanup(m.Close)
		require.NoError(t, m.WaitReady(ctx, 1, 1))
		tag := "rerun-" + map[bool]string{false: "control", true: "zero"}[zero]
		killed := make(chan bool, 1)
		go func() {
			// Until the read's backend shows up, however late the read
			// starts on a busy machine (bounded by ctx).
			for ctx.Err() == nil {
				var k int
				if killer.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE '%"+tag+"%' AND pid <> pg_backend_pid()").Scan(&k) == nil && k > 0 {
					killed <- true
					return
				}
				select {
				case <-ctx.Done():
				case <-time.After(2 * time.Millisecond):
				}
			}
			killed <- false
		}()
		var who string
		err = m.Replica().QueryRow(ctx, "SELECT current_setting('cluster_name') FROM pg_sleep(0.5) WHERE '"+tag+"' <> ''").Scan(&who)
		require.True(t, <-killed, "%s: the first run's backend was terminated", tag)
		t.Logf("%s: %q, %v", tag, who, err)
		m.Close()
		require.NoError(t, err, "%s: the replica read whose backend was terminated was not run again", tag)
	}
}

// TestMovedNameWithPreferStandbyValidate is TestMovedNameTakesNoWrites with
// a user ValidateConnect set in ConfigureNode that returns a
// *pgconn.NotPreferredError (pgconn's prefer-standby check), after which
// pgconn connects again and keeps the connection it did not prefer: that
// one is compared too (it was not, and the stale master the name reaches
// again took the master's writes).
func TestMovedNameWithPreferStandbyValidate(t *testing.T) {
	movedNameTakesNoWrites(t, "127.0.0.45", "127.0.0.46", func(cfg *hasql.Config) {
		cfg.ConfigureNode = func(_ hasql.NodeConfig, pc *pgxpool.Config) error {
			pc.ConnConfig.ValidateConnect = pgconn.ValidateConnectTargetSessionAttrsPreferStandby
			return nil
		}
	})
}
