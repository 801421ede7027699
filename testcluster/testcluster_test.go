package testcluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/testcluster"
)

// TestFailsWithClusterUp is the child of TestNothingLeaksAfterFailedTest: a
// test that fails while its cluster is up. It runs only as that child.
func TestFailsWithClusterUp(t *testing.T) {
	if os.Getenv("PGXHA_TESTCLUSTER_FAILING_CHILD") != "1" {
		t.Skip("a fixture run by TestNothingLeaksAfterFailedTest in a child process")
	}
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	fmt.Printf("CLUSTER_DIR=%s\n", c.Dir())
	t.Fatal("failing on purpose with the cluster up")
}

func connect(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// replication returns application_name → sync_state from a master.
func replication(t *testing.T, ctx context.Context, n *testcluster.Node) map[string]string {
	t.Helper()
	conn, err := n.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT application_name, sync_state FROM pg_stat_replication WHERE state = 'streaming'")
	require.NoError(t, err)
	out := map[string]string{}
	for rows.Next() {
		var app, st string
		require.NoError(t, rows.Scan(&app, &st))
		out[app] = st
	}
	require.NoError(t, rows.Err())
	return out
}

// waitReplication waits until n's pg_stat_replication (streaming rows)
// names every replica of want in the sync state given ("" for any) and,
// with exact, no other; it fails with what it last showed after 30s. A
// replica's rows can be visible on it before its walreceiver streams.
func waitReplication(t *testing.T, ctx context.Context, n *testcluster.Node, want map[string]string, exact bool, msgAndArgs ...any) {
	t.Helper()
	var got map[string]string
	deadline := time.Now().Add(30 * time.Second)
	for {
		got = replication(t, ctx, n)
		ok := !exact || len(got) == len(want)
		for app, st := range want {
			if g, in := got[app]; !in || st != "" && g != st {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			assert.Fail(t, fmt.Sprintf("pg_stat_replication of %s shows %v, want %v (exact: %v)", n, got, want, exact), msgAndArgs...)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func inRecovery(t *testing.T, ctx context.Context, dsn string) bool {
	t.Helper()
	conn := connect(t, ctx, dsn)
	var r bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&r))
	return r
}

// waitRow waits until the row id is visible through dsn.
func waitRow(t *testing.T, ctx context.Context, dsn string, id int) {
	t.Helper()
	conn := connect(t, ctx, dsn)
	require.Eventually(t, func() bool {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM t WHERE id = $1", id).Scan(&n)
		return err == nil && n == 1
	}, 20*time.Second, 10*time.Millisecond, "row %d not visible through %s", id, dsn)
}

// queryFails runs a query through dsn with a short deadline and returns its
// error (nil if it answered).
func queryWithin(ctx context.Context, dsn string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

func TestReplicatedCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	nodes := c.Nodes()
	require.Len(t, nodes, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	require.Equal(t, n1, c.Master())

	t.Run("roles", func(t *testing.T) {
		waitReplication(t, ctx, n1, map[string]string{"n2": "sync", "n3": "async"}, true)
		assert.False(t, inRecovery(t, ctx, n1.DSN()))
		assert.True(t, inRecovery(t, ctx, n2.DSN()))
		assert.True(t, inRecovery(t, ctx, n3.DSN()))
		conn := connect(t, ctx, n2.DSN())
		var clusterName string
		require.NoError(t, conn.QueryRow(ctx, "SHOW cluster_name").Scan(&clusterName))
		assert.Equal(t, "n2", clusterName)
	})

	t.Run("DSN reaches every node", func(t *testing.T) {
		cfg, err := pgconn.ParseConfig(c.DSN())
		require.NoError(t, err)
		hosts := []string{net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))}
		for _, fb := range cfg.Fallbacks {
			hosts = append(hosts, net.JoinHostPort(fb.Host, strconv.Itoa(int(fb.Port))))
		}
		assert.Equal(t, []string{n1.Addr(), n2.Addr(), n3.Addr()}, hosts)
	})

	t.Run("write on master, read on both replicas", func(t *testing.T) {
		conn := connect(t, ctx, n1.DSN())
		_, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, v text)")
		require.NoError(t, err)
		_, err = conn.Exec(ctx, "INSERT INTO t VALUES (1, 'one')")
		require.NoError(t, err)
		waitRow(t, ctx, n2.DSN(), 1)
		waitRow(t, ctx, n3.DSN(), 1)
		_, err = connect(t, ctx, n2.DSN()).Exec(ctx, "INSERT INTO t VALUES (2, 'two')")
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		assert.Equal(t, "25006", pgErr.Code, "a replica refuses writes")
	})

	t.Run("pause replay makes lag", func(t *testing.T) {
		require.NoError(t, n3.PauseReplay(ctx))
		master := connect(t, ctx, n1.DSN())
		_, err := master.Exec(ctx, "INSERT INTO t SELECT g, 'x' FROM generate_series(100, 1099) g")
		require.NoError(t, err)
		waitRow(t, ctx, n2.DSN(), 1099)
		var lagBytes int64
		require.NoError(t, master.QueryRow(ctx,
			"SELECT pg_current_wal_lsn() - replay_lsn FROM pg_stat_replication WHERE application_name = 'n3'").Scan(&lagBytes))
		assert.Positive(t, lagBytes)
		var visible int
		require.NoError(t, connect(t, ctx, n3.DSN()).QueryRow(ctx, "SELECT count(*) FROM t WHERE id >= 100").Scan(&visible))
		assert.Zero(t, visible, "paused replica must not show the new rows")
		require.NoError(t, n3.ResumeReplay(ctx))
		waitRow(t, ctx, n3.DSN(), 1099)
	})

	t.Run("latency", func(t *testing.T) {
		conn := connect(t, ctx, n2.DSN())
		require.NoError(t, n2.SetLatency(50*time.Millisecond))
		begin := time.Now()
		_, err := conn.Exec(ctx, "SELECT 1")
		require.NoError(t, err)
		assert.GreaterOrEqual(t, time.Since(begin), 100*time.Millisecond, "a round trip crosses the delay twice")
		require.NoError(t, n2.SetLatency(0))
	})

	t.Run("partition", func(t *testing.T) {
		conn := connect(t, ctx, n3.DSN())
		require.NoError(t, n3.Partition())
		err := queryWithin(ctx, n3.DSN(), 300*time.Millisecond)
		assert.True(t, errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err), "new connection must hang: %v", err)
		qctx, qcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err = conn.Exec(qctx, "SELECT 1")
		qcancel()
		assert.True(t, pgconn.Timeout(err), "existing connection must hang: %v", err)
		assert.NoError(t, queryWithin(ctx, n2.DSN(), 5*time.Second), "the others answer")
		assert.NoError(t, queryWithin(ctx, n3.DirectDSN(), 5*time.Second), "the server itself is fine")
		require.NoError(t, n3.Heal())
		assert.NoError(t, queryWithin(ctx, n3.DSN(), 5*time.Second))
	})

	t.Run("pause", func(t *testing.T) {
		require.NoError(t, n3.Pause())
		err := queryWithin(ctx, n3.DirectDSN(), 300*time.Millisecond)
		assert.True(t, errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err), "paused server must hang: %v", err)
		assert.NoError(t, queryWithin(ctx, n2.DSN(), 5*time.Second), "the others answer")
		require.NoError(t, n3.Resume())
		assert.NoError(t, queryWithin(ctx, n3.DSN(), 5*time.Second))
	})

	t.Run("stop and start", func(t *testing.T) {
		conn := connect(t, ctx, n3.DSN())
		require.NoError(t, n3.Stop())
		_, err := conn.Exec(ctx, "SELECT 1")
		require.Error(t, err, "a connection to a stopped server fails")
		_, err = net.DialTimeout("tcp", n3.Addr(), time.Second)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
		require.NoError(t, n3.Start())
		waitRow(t, ctx, n3.DSN(), 1)
		waitReplication(t, ctx, n1, map[string]string{"n3": ""}, false)
	})

	t.Run("kill", func(t *testing.T) {
		conn := connect(t, ctx, n3.DSN())
		require.NoError(t, n3.Kill())
		_, err := conn.Exec(ctx, "SELECT 1")
		require.Error(t, err, "a connection to a killed server is reset")
		_, err = net.DialTimeout("tcp", n3.Addr(), time.Second)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED, "a killed node refuses connections")
		assert.False(t, n3.Running())
		require.NoError(t, n3.Start())
		waitRow(t, ctx, n3.DSN(), 1)
	})

	t.Run("failover and rejoin", func(t *testing.T) {
		master := connect(t, ctx, n1.DSN())
		_, err := master.Exec(ctx, "INSERT INTO t VALUES (2000, 'before failover')")
		require.NoError(t, err, "synchronous commit: acknowledged means on n2")
		require.NoError(t, n1.Kill())
		require.NoError(t, c.Failover(ctx, n2))
		assert.Equal(t, n2, c.Master())
		assert.False(t, inRecovery(t, ctx, n2.DSN()), "the promoted node is a master")
		waitRow(t, ctx, n2.DSN(), 2000)
		_, err = connect(t, ctx, n2.DSN()).Exec(ctx, "INSERT INTO t VALUES (2001, 'after failover')")
		require.NoError(t, err, "the promoted node accepts writes")
		waitRow(t, ctx, n3.DSN(), 2001)
		waitReplication(t, ctx, n2, map[string]string{"n3": "sync"}, true, "n3 streams from n2 and took the sync place")

		require.NoError(t, c.Rejoin(ctx, n1))
		assert.True(t, inRecovery(t, ctx, n1.DSN()), "the old master came back as a replica")
		waitRow(t, ctx, n1.DSN(), 2001)
		waitReplication(t, ctx, n2, map[string]string{"n1": "async", "n3": "sync"}, true)
	})
}

func TestPromoteMakesSplitBrain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	require.NoError(t, n2.Promote(ctx))
	assert.Equal(t, n2, c.Master())
	for _, n := range []*testcluster.Node{n1, n2} {
		_, err := connect(t, ctx, n.DSN()).Exec(ctx, "CREATE TABLE IF NOT EXISTS split (id int)")
		assert.NoError(t, err, "%s accepts writes", n)
	}
	st := c.Status(ctx)
	require.Len(t, st, 2)
	assert.Equal(t, "stale master", st[0].Role, "writable, behind the cluster's master: %+v", st)
	assert.Equal(t, "master", st[1].Role)
	assert.Greater(t, st[1].Timeline, st[0].Timeline, "the promoted node is on a newer timeline")
}

// TestStatusDuringChaos: Status tells each node's state while others are
// broken: a paused node is shown paused (not asked) and the healthy ones
// keep their roles; after a partition and a failover, the old master, still
// writable past its partition, is a stale master, marked partitioned.
func TestStatusDuringChaos(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	roles := func(st []testcluster.NodeState) []string {
		var out []string
		for _, s := range st {
			out = append(out, s.Role)
		}
		return out
	}

	require.NoError(t, n2.Pause())
	begin := time.Now()
	st := c.Status(ctx)
	t.Logf("status with n2 paused took %s: %+v", time.Since(begin), st)
	require.Len(t, st, 3)
	assert.Equal(t, []string{"master", "paused", "async"}, roles(st), "%+v", st)
	assert.True(t, st[1].Faults.Paused)
	assert.Equal(t, "paused", st[1].Faults.String())
	assert.NoError(t, st[0].Err)
	assert.NoError(t, st[2].Err)
	require.NoError(t, n2.Resume())

	require.NoError(t, n1.Partition())
	require.NoError(t, c.Failover(ctx, n2))
	require.NoError(t, n3.SetLatency(20*time.Millisecond))
	st = c.Status(ctx)
	require.Len(t, st, 3)
	assert.Equal(t, []string{"stale master", "master", "sync"}, roles(st), "%+v", st)
	assert.Equal(t, testcluster.Faults{Partitioned: true}, st[0].Faults)
	assert.Less(t, st[0].Timeline, st[1].Timeline)
	assert.Equal(t, "latency 20ms", st[2].Faults.String())
	assert.Equal(t, testcluster.Faults{}, st[1].Faults)
}

func TestOptionsErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		opts testcluster.Options
		want string
	}{
		{testcluster.Options{Replicas: -2}, "Replicas -2"},
		{testcluster.Options{Replicas: 1, SyncReplicas: 2}, "SyncReplicas 2"},
		{testcluster.Options{Backend: "cloud"}, `unknown backend "cloud"`},
		{testcluster.Options{BinDir: t.TempDir()}, "does not hold initdb"},
		{testcluster.Options{Settings: map[string]string{"x; DROP": "1"}}, "setting name"},
	} {
		_, err := testcluster.Start(ctx, tc.opts)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestFindBinDirNamesWhereItLooked(t *testing.T) {
	t.Setenv("PGXHA_PG_BINDIR", "/nonexistent/bin")
	_, err := testcluster.FindBinDir()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "/nonexistent/bin")
}

// serverProcesses lists live processes whose command line mentions dir.
func serverProcesses(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var found []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(string(cmdline), dir) {
			found = append(found, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}

func TestNothingLeaksAfterStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := testcluster.Start(ctx, testcluster.Options{Replicas: 1})
	require.NoError(t, err)
	dir := c.Dir()
	var addrs []string
	for _, n := range c.Nodes() {
		addrs = append(addrs, n.Addr(), n.DirectAddr())
	}
	require.NotEmpty(t, serverProcesses(t, dir), "the cluster runs")
	var dsm string
	conn, err := c.Nodes()[0].Conn(ctx)
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(ctx, "SHOW dynamic_shared_memory_type").Scan(&dsm))
	conn.Close(ctx)
	assert.Equal(t, "mmap", dsm, "dynamic shared memory lives in the data directory, not /dev/shm")
	// A killed server leaves its System V segment behind; Kill removes it.
	pid, err := os.ReadFile(filepath.Join(dir, "n1", "postmaster.pid"))
	require.NoError(t, err)
	shmid := strings.Fields(strings.Split(string(pid), "\n")[6])[1]
	require.True(t, sysvSegmentExists(t, shmid))
	require.NoError(t, c.Nodes()[0].Kill())
	assert.False(t, sysvSegmentExists(t, shmid), "the killed server's shared memory segment is removed")
	require.NoError(t, c.Nodes()[1].Pause(), "a paused node must not stop Stop")
	require.NoError(t, c.Stop())
	require.NoError(t, c.Stop(), "Stop is idempotent")
	assert.Empty(t, serverProcesses(t, dir))
	_, err = os.Stat(dir)
	assert.True(t, os.IsNotExist(err), "the cluster directory is removed")
	for _, a := range addrs {
		_, err := net.DialTimeout("tcp", a, time.Second)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED, "nothing listens on %s", a)
	}
}

// sysvSegmentExists reports whether a System V shared memory segment is
// listed in /proc/sysvipc/shm.
func sysvSegmentExists(t *testing.T, shmid string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/sysvipc/shm")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 1 && f[1] == shmid {
			return true
		}
	}
	return false
}

func TestNothingLeaksAfterFailedTest(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.v", "-test.run=^TestFailsWithClusterUp$")
	cmd.Env = append(os.Environ(), "PGXHA_TESTCLUSTER_FAILING_CHILD=1")
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr, "the child test must fail; output:\n%s", out)
	text := string(out)
	assert.Contains(t, text, "failing on purpose")
	assert.Contains(t, text, "last lines of n1's server log", "a failed test gets the node logs")
	i := strings.Index(text, "CLUSTER_DIR=")
	require.GreaterOrEqual(t, i, 0, "output:\n%s", text)
	dir := strings.Fields(text[i+len("CLUSTER_DIR="):])[0]
	assert.Empty(t, serverProcesses(t, dir))
	_, err = os.Stat(dir)
	assert.True(t, os.IsNotExist(err), "the cluster directory %s is removed", dir)
}

func BenchmarkStart(b *testing.B) {
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		c, err := testcluster.Start(ctx, testcluster.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := c.Stop(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

func BenchmarkFailover(b *testing.B) {
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c, err := testcluster.Start(ctx, testcluster.Options{})
		if err != nil {
			b.Fatal(err)
		}
		n1, n2 := c.Nodes()[0], c.Nodes()[1]
		if err := n1.Kill(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := c.Failover(ctx, n2); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := c.Stop(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// TestKilledWithPausedNode is the child of TestOrphansOfAKilledTestAreSwept:
// it pauses a node and waits to be killed. It runs only as that child.
func TestKilledWithPausedNode(t *testing.T) {
	if os.Getenv("PGXHA_TESTCLUSTER_KILLED_CHILD") != "1" {
		t.Skip("a fixture run by TestOrphansOfAKilledTestAreSwept in a child process")
	}
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	require.NoError(t, c.Nodes()[0].Pause())
	fmt.Printf("CLUSTER_DIR=%s\n", c.Dir())
	select {} // killed by the parent
}

func TestOrphansOfAKilledTestAreSwept(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledWithPausedNode$", "-test.v")
	cmd.Env = append(os.Environ(), "PGXHA_TESTCLUSTER_KILLED_CHILD=1")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var dir string
	buf := make([]byte, 0, 4096)
	deadline := time.Now().Add(2 * time.Minute)
	for dir == "" && time.Now().Before(deadline) {
		chunk := make([]byte, 1024)
		n, err := out.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if i := strings.Index(string(buf), "CLUSTER_DIR="); i >= 0 && strings.Contains(string(buf[i:]), "\n") {
			dir = strings.Fields(string(buf[i+len("CLUSTER_DIR="):]))[0]
		}
		if err != nil {
			break
		}
	}
	require.NotEmpty(t, dir, "child output: %s", buf)
	require.NoError(t, cmd.Process.Kill(), "the test process dies without stopping its cluster")
	_ = cmd.Wait()
	defer os.RemoveAll(dir)
	// The killed postmaster's frozen backends are left under init.
	require.Eventually(t, func() bool { return len(liveUnder(t, dir)) > 0 }, 10*time.Second, 10*time.Millisecond)

	testcluster.New(t, testcluster.Options{Replicas: -1}) // the next cluster sweeps them
	assert.Empty(t, liveUnder(t, dir))
	_, err = os.Stat(dir)
	assert.True(t, os.IsNotExist(err), "the dead test's cluster directory is removed")
}

// liveUnder lists processes (not zombies) whose working directory is under
// dir.
func liveUnder(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var found []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil || !strings.HasPrefix(cwd, dir) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(stat)
		if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 0 && f[0] != "Z" {
			found = append(found, e.Name())
		}
	}
	return found
}

// TestFailoverRewindsAReplicaAhead: a replica that replayed past the point
// where the new master's timeline forked off cannot stream from it; Failover
// rewinds it and it follows.
func TestFailoverRewindsAReplicaAhead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var mu sync.Mutex
	var logs []string
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 0, Logf: func(format string, args ...any) {
		t.Logf(format, args...)
		mu.Lock()
		defer mu.Unlock()
		logs = append(logs, fmt.Sprintf(format, args...))
	}})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	master := connect(t, ctx, n1.DSN())
	_, err := master.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)")
	require.NoError(t, err)
	_, err = master.Exec(ctx, "INSERT INTO t VALUES (0)")
	require.NoError(t, err)
	waitRow(t, ctx, n2.DSN(), 0)
	// n2 stops; the master writes on, and only n3 receives it.
	require.NoError(t, n2.Stop())
	_, err = master.Exec(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	waitRow(t, ctx, n3.DSN(), 1)
	require.NoError(t, n1.Kill())
	require.NoError(t, n2.Start())
	require.NoError(t, c.Failover(ctx, n2), "n2 becomes master without row 1; n3, ahead of it, is rewound")
	assert.Equal(t, n2, c.Master())
	_, err = connect(t, ctx, n2.DSN()).Exec(ctx, "INSERT INTO t VALUES (2)")
	require.NoError(t, err)
	waitRow(t, ctx, n3.DSN(), 2)
	assert.True(t, inRecovery(t, ctx, n3.DSN()))
	waitReplication(t, ctx, n2, map[string]string{"n3": ""}, false, "n3 streams from the new master")
	mu.Lock()
	defer mu.Unlock()
	assert.True(t, slices.ContainsFunc(logs, func(l string) bool { return strings.Contains(l, "n3 replayed past") }),
		"n3 was found ahead and rewound at once: %q", logs)
}

// TestConvergeAfterOrphaningAndRoguePromotion leaves the cluster in the
// states a fault schedule does (a dead master, an orphaned replica following
// it, a promotion while the master runs, a partitioned replica of the stale
// master) and checks that Converge brings every node back as a replica of
// the current master, with a synchronous one.
func TestConvergeAfterOrphaningAndRoguePromotion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	_, err := connect(t, ctx, n1.DSN()).Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	require.NoError(t, err)

	// The master dies; only the sync replica is promoted: n3 still
	// follows the dead n1.
	require.NoError(t, n1.Kill())
	require.NoError(t, n2.Promote(ctx))
	_, err = connect(t, ctx, n2.DSN()).Exec(ctx, "INSERT INTO t VALUES (2)")
	require.NoError(t, err)
	require.NoError(t, c.Converge(ctx))
	assert.Equal(t, n2, c.Master())
	waitReplication(t, ctx, n2, map[string]string{"n1": "sync", "n3": "async"}, true,
		"the dead master and the orphan stream from n2, one of them synchronous")
	assert.True(t, inRecovery(t, ctx, n1.DSN()))
	waitRow(t, ctx, n1.DSN(), 2)
	waitRow(t, ctx, n3.DSN(), 2)

	// n1, n2's sync replica, is promoted while n2 runs; n3 is cut off,
	// still a replica of the now stale n2.
	require.NoError(t, n3.Partition())
	require.NoError(t, n1.Promote(ctx))
	_, err = connect(t, ctx, n1.DSN()).Exec(ctx, "INSERT INTO t VALUES (3)")
	require.NoError(t, err)
	require.NoError(t, c.Converge(ctx))
	assert.Equal(t, n1, c.Master())
	st := c.Status(ctx)
	require.Len(t, st, 3)
	assert.Equal(t, []string{"master", "sync", "async"}, []string{st[0].Role, st[1].Role, st[2].Role},
		"the stale master n2 and n3 rebuilt as replicas of n1: %+v", st)
	assert.Equal(t, st[0].Timeline, st[1].Timeline)
	assert.Equal(t, st[0].Timeline, st[2].Timeline)
	waitRow(t, ctx, n2.DSN(), 3)
	waitRow(t, ctx, n3.DSN(), 3)
	_, err = connect(t, ctx, n1.DSN()).Exec(ctx, "INSERT INTO t VALUES (4)")
	require.NoError(t, err, "synchronous commit works: the sync replica answers")
}

// TestRejoinCopiesAfreshWhenRewindFails: an old master whose WAL is gone
// cannot be rewound; Rejoin (and so Converge) copies it afresh from the
// master instead.
func TestRejoinCopiesAfreshWhenRewindFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var mu sync.Mutex
	var logs []string
	c := testcluster.New(t, testcluster.Options{Replicas: 1, SyncReplicas: 1, Logf: func(format string, args ...any) {
		t.Logf(format, args...)
		mu.Lock()
		defer mu.Unlock()
		logs = append(logs, fmt.Sprintf(format, args...))
	}})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	_, err := connect(t, ctx, n1.DSN()).Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	require.NoError(t, n1.Kill())
	require.NoError(t, c.Failover(ctx, n2))
	_, err = connect(t, ctx, n2.DSN()).Exec(ctx, "INSERT INTO t VALUES (2)")
	require.NoError(t, err)
	segments, err := filepath.Glob(filepath.Join(c.Dir(), n1.Name(), "pg_wal", "0000*"))
	require.NoError(t, err)
	require.NotEmpty(t, segments)
	for _, f := range segments {
		require.NoError(t, os.Remove(f))
	}

	require.NoError(t, c.Rejoin(ctx, n1))
	assert.True(t, inRecovery(t, ctx, n1.DSN()))
	waitRow(t, ctx, n1.DSN(), 2)
	waitReplication(t, ctx, n2, map[string]string{"n1": ""}, false)
	mu.Lock()
	defer mu.Unlock()
	assert.True(t, slices.ContainsFunc(logs, func(l string) bool { return strings.Contains(l, "copying it afresh from n2") }),
		"pg_rewind failed and n1 was copied: %q", logs)
}

// A replica added to a running cluster streams from the master; a replica
// removed is gone for good, and a synchronous one is replaced.
func TestAddRemoveNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1, SyncReplicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	_, err := connect(t, ctx, n1.DSN()).Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	require.NoError(t, err)

	n3, err := c.AddNode(ctx)
	require.NoError(t, err)
	assert.Equal(t, "n3", n3.Name())
	assert.Equal(t, []*testcluster.Node{n1, n2, n3}, c.Nodes())
	waitReplication(t, ctx, n1, map[string]string{"n2": "sync", "n3": "async"}, true)
	assert.True(t, inRecovery(t, ctx, n3.DSN()))
	waitRow(t, ctx, n3.DSN(), 1)
	assert.Contains(t, c.DSN(), n3.Addr())

	require.Error(t, c.RemoveNode(ctx, n1), "the master is not removed")
	assert.True(t, n1.Running())

	addr := n2.Addr()
	require.NoError(t, c.RemoveNode(ctx, n2))
	assert.Equal(t, []*testcluster.Node{n1, n3}, c.Nodes())
	assert.False(t, n2.Running())
	waitReplication(t, ctx, n1, map[string]string{"n3": "sync"}, true, "the synchronous place goes to n3")
	assert.Equal(t, []*testcluster.Node{n3}, c.SyncReplicas())
	assert.NotContains(t, c.DSN(), addr)
	_, err = net.DialTimeout("tcp", addr, time.Second)
	assert.ErrorIs(t, err, syscall.ECONNREFUSED, "nothing listens on the removed node's address")
	_, err = os.Stat(filepath.Join(c.Dir(), "n2"))
	assert.True(t, os.IsNotExist(err), "its data directory is removed")
	_, err = connect(t, ctx, n1.DSN()).Exec(ctx, "INSERT INTO t VALUES (2)")
	require.NoError(t, err, "synchronous commits go on with n3")

	n4, err := c.AddNode(ctx)
	require.NoError(t, err)
	assert.Equal(t, "n4", n4.Name(), "a removed node's name is not reused")
	waitRow(t, ctx, n4.DSN(), 2)
	require.Error(t, c.RemoveNode(ctx, n2), "removed already")
}
