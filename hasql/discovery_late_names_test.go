//go:build linux

package hasql_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// lateFirstLook is a cluster of a master n1 and a replica n2 laid out as
// Patroni lays it out (n2's primary_conninfo names it pg-b, its member
// name; its cluster_name n2 is on no walsender row), a check user without
// pg_monitor (the master's walsender rows show names, no address, no sync
// state), and a fake Patroni API listing n1 as pg-a and n2 as n2Name whose
// first look answers only once release is called: later than New waits
// for it, so the Manager's first set is the connection string's hosts.
type lateFirstLook struct {
	c       *testcluster.Cluster
	n1, n2  *testcluster.Node
	dsn     string
	looks   atomic.Int64 // looks the API answered
	release func()       // lets the API answer
	d       *discovery.Patroni
}

func newLateFirstLook(t *testing.T, ctx context.Context, n2Name string) *lateFirstLook {
	t.Helper()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	l := &lateFirstLook{c: c, n1: c.Nodes()[0], n2: c.Nodes()[1]}
	execOn(t, ctx, l.n2, "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port="+portStr(l.n1.DirectAddr())+" user=postgres password=pgxha application_name=pg-b'",
		"SELECT pg_reload_conf()")
	require.Eventually(t, func() bool {
		return lsnOn(t, ctx, l.n1, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pg-b' AND state = 'streaming'") == 1
	}, 30*time.Second, 20*time.Millisecond, "n2 streams as pg-b")
	execOn(t, ctx, l.n1, "CREATE ROLE watcher LOGIN PASSWORD 'w'", "CREATE TABLE late_look (v int)", "GRANT ALL ON late_look TO watcher")
	require.Eventually(t, func() bool {
		return lsnOn(t, ctx, l.n2, "SELECT count(*) FROM pg_roles WHERE rolname = 'watcher'") == 1
	}, 30*time.Second, 10*time.Millisecond, "n2 replays the role")
	l.dsn = withParams(strings.Replace(c.DSN(), "postgres:pgxha@", "watcher:w@", 1),
		"hasql_check_interval", "100ms", "hasql_check_timeout", "500ms")

	member := func(name, role string, n *testcluster.Node) patroniMember {
		host, port, err := net.SplitHostPort(n.Addr())
		require.NoError(t, err)
		p, err := strconv.Atoi(port)
		require.NoError(t, err)
		return patroniMember{Name: name, Role: role, State: "streaming", Host: host, Port: p}
	}
	members := []patroniMember{member("pg-a", "leader", l.n1), member(n2Name, "replica", l.n2)}
	released := make(chan struct{})
	var once sync.Once
	l.release = func() { once.Do(func() { close(released) }) }
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-released:
		case <-r.Context().Done():
			return
		}
		l.looks.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"members": members})
	}))
	// Cleanups run last first: the Manager (closed by newManager's) stops
	// looking, then the API's handlers are let go, then it closes.
	t.Cleanup(api.Close)
	t.Cleanup(l.release)
	var err error
	l.d, err = discovery.NewPatroni(discovery.PatroniConfig{URLs: []string{api.URL}, Interval: 100 * time.Millisecond})
	require.NoError(t, err)
	return l
}

// A Patroni API that answers its first look later than New waits: the
// Manager's first set is the connection string's hosts, without the
// member names. With a check user without pg_monitor, the name is what
// finds a replica among the master's walsender rows, and n2's row goes by
// its member name pg-b: once the set arrives, the nodes take the member
// names in place, n2 is found and serves reads, and the master's pool is
// kept (a transaction open on it across the rename commits). Before, the
// nodes of the connection string kept no name for the Manager's life and
// n2 stayed detached, while a Manager whose first look came in time named
// it.
func TestPatroniLateFirstLookNamesTheConnectionStringNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := newLateFirstLook(t, ctx, "pg-b")
	m := newManager(t, ctx, l.dsn, hasql.WithDiscoverer(l.d))
	require.Zero(t, l.looks.Load(), "the API answered before New returned")

	// The scenario: n2, known by its cluster_name, is on no walsender row.
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	waitUntil(t, ctx, "n2 is found detached under its cluster_name", func() bool {
		st := statusAt(m, l.n2)
		return st.Name == "n2" && st.Role == hasql.RoleDetached
	})
	require.Contains(t, statusAt(m, l.n2).Detached, "pg_monitor")

	// A transaction open on the master across the rename.
	tx, err := m.Master().Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op once committed
	var pid int
	require.NoError(t, tx.QueryRow(ctx, "INSERT INTO late_look VALUES (1) RETURNING pg_backend_pid()").Scan(&pid))
	var idle *pgxpool.Conn
	idle, err = m.AcquireMaster(ctx)
	require.NoError(t, err)
	// Released however the test ends: Close waits for it.
	defer func() {
		if idle != nil {
			idle.Release()
		}
	}()
	var idlePID int
	require.NoError(t, idle.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&idlePID))

	l.release()
	waitCtx, waitCancel := context.WithTimeout(ctx, 30*time.Second)
	defer waitCancel()
	for {
		s1, s2 := statusAt(m, l.n1), statusAt(m, l.n2)
		if s1.Name == "pg-a" && s2.Name == "pg-b" && s2.Role.IsReplica() {
			break
		}
		select {
		case <-waitCtx.Done():
			t.Fatalf("after %d looks of the API: n1 %q %s, n2 %q %s (%s); want pg-a master, pg-b a replica that serves reads",
				l.looks.Load(), s1.Name, s1.Role, s2.Name, s2.Role, s2.Detached)
		case <-time.After(10 * time.Millisecond):
		}
	}
	s2 := statusAt(m, l.n2)
	require.Contains(t, s2.SyncUnknown, "pg_monitor", "sync is not claimed from rows that hide it: %+v", s2)
	require.Equal(t, hasql.RoleMaster, statusAt(m, l.n1).Role)
	for _, ns := range m.Stat().Nodes {
		if ns.Addr == l.n2.Addr() {
			require.Equal(t, "pg-b", ns.Name, "Stat shows the name")
		}
	}
	for range 5 {
		conn, err := m.AcquireReplica(ctx)
		require.NoError(t, err, "%v", m.Nodes())
		require.Equal(t, "n2", nodeOf(l.c, conn))
		conn.Release()
	}

	// The master's pool was kept: the transaction commits on the
	// connection it began on, and the idle one still works.
	var pidNow int
	require.NoError(t, tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pidNow))
	require.Equal(t, pid, pidNow)
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, idle.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pidNow))
	require.Equal(t, idlePID, pidNow)
	idle.Release()
	idle = nil
	require.EqualValues(t, 1, lsnOn(t, ctx, l.n1, "SELECT count(*) FROM late_look"))
}

// A name the user gave a node (WithReplicaName) is never replaced by the
// one the source reports: Patroni lists n2 under another name, and n2
// keeps pg-b, the name its walsender row goes by, and serves reads, while
// n1, which the user did not name, takes its member name.
func TestPatroniLateFirstLookKeepsTheNameTheUserGave(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := newLateFirstLook(t, ctx, "pg-other")
	m := newManager(t, ctx, l.dsn, hasql.WithDiscoverer(l.d), hasql.WithReplicaName(l.n2.Addr(), "pg-b"))
	require.Zero(t, l.looks.Load(), "the API answered before New returned")
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	require.Equal(t, "pg-b", statusAt(m, l.n2).Name)

	l.release()
	waitCtx, waitCancel := context.WithTimeout(ctx, 30*time.Second)
	defer waitCancel()
	for statusAt(m, l.n1).Name != "pg-a" {
		select {
		case <-waitCtx.Done():
			t.Fatalf("after %d looks of the API the set is not taken: %v", l.looks.Load(), m.Nodes())
		case <-time.After(10 * time.Millisecond):
		}
	}
	// A few checks of n2 after the set was taken.
	seen, checks := statusAt(m, l.n2).LastCheck, 0
	waitUntil(t, waitCtx, "three checks of n2", func() bool {
		if st := statusAt(m, l.n2); st.LastCheck.After(seen) {
			seen, checks = st.LastCheck, checks+1
		}
		return checks >= 3
	})
	s2 := statusAt(m, l.n2)
	require.Equal(t, "pg-b", s2.Name, "the name the user gave stays")
	require.True(t, s2.Role.IsReplica(), "%+v", s2)
	conn, err := m.AcquireReplica(ctx)
	require.NoError(t, err)
	require.Equal(t, "n2", nodeOf(l.c, conn))
	conn.Release()
}
