package testcluster_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/testcluster"
)

// The compose tests need a Docker engine. `make compose-test` (part of
// `make test`) runs them with PGXHA_COMPOSE=1 when one answers; asking for
// the compose backend with PGXHA_TESTCLUSTER=compose runs them too. Once
// asked for, they fail when Docker is missing.
func composeRequested() bool {
	return os.Getenv("PGXHA_COMPOSE") == "1" || os.Getenv("PGXHA_TESTCLUSTER") == string(testcluster.BackendCompose)
}

func requireCompose(t *testing.T) {
	t.Helper()
	if !composeRequested() {
		t.Skip("compose backend tests need Docker: run them with `make compose-test` (or PGXHA_COMPOSE=1 go test -run Compose ./testcluster/)")
	}
}

// repoRoot is the directory of docker-compose.replication.yml.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok)
	return filepath.Dir(filepath.Dir(file))
}

// composeCommand returns the compose tool that works here, or nil.
func composeCommand(t *testing.T) []string {
	t.Helper()
	for _, argv := range [][]string{{"docker", "compose"}, {"docker-compose"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := exec.CommandContext(ctx, argv[0], append(argv[1:], "version")...).Run()
		cancel()
		if err == nil {
			return argv
		}
	}
	return nil
}

// docker runs a docker command and returns its output.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	require.NoError(t, err, "docker %s: %s", strings.Join(args, " "), out)
	return string(out)
}

func TestComposeFileIsValid(t *testing.T) {
	tool := composeCommand(t)
	if tool == nil {
		if composeRequested() {
			t.Fatal("neither `docker compose` nor `docker-compose` works")
		}
		t.Skip("no compose tool: run with `make compose-test` on a machine with Docker")
	}
	root := repoRoot(t)
	run := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		args = append(append(tool[1:len(tool):len(tool)], "-f", filepath.Join(root, "docker-compose.replication.yml")), args...)
		cmd := exec.CommandContext(ctx, tool[0], args...)
		cmd.Dir = root
		// The file's defaults, whatever this environment says.
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "PGXHA_") && !strings.HasPrefix(kv, "COMPOSE_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s %s:\n%s", tool[0], strings.Join(args, " "), out)
		return string(out)
	}
	assert.Equal(t, []string{"n1", "n2", "n3"}, strings.Fields(run("config", "--services")))
	assert.ElementsMatch(t, []string{"n1-data", "n2-data", "n3-data"}, strings.Fields(run("config", "--volumes")))
	config := run("config")
	for _, want := range []string{"pgxha/postgres:15-debian", "NET_ADMIN", "FIRST 1 (n2)", "172.29.57.0/24", "172.29.57.11", "127.0.0.1", "15432", "15433", "15434", "15435", "15436", "15437", "/pgxha/node.sh", "health"} {
		assert.Contains(t, config, want)
	}
}

func TestComposeOptionsErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		opts testcluster.Options
		want string
	}{
		{testcluster.Options{Backend: testcluster.BackendCompose, Replicas: 3, SyncReplicas: 1}, "at most 2 replicas"},
		{testcluster.Options{Backend: testcluster.BackendCompose, Settings: map[string]string{"work_mem": "8MB"}}, "Options.Settings"},
	} {
		_, err := testcluster.Start(ctx, tc.opts)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestComposeWithoutEngineFailsClearly(t *testing.T) {
	if composeCommand(t) == nil {
		t.Skip("no compose tool: run with `make compose-test` on a machine with Docker")
	}
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := testcluster.Start(ctx, testcluster.Options{Backend: testcluster.BackendCompose})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "needs a Docker engine, and none answers")
}

func TestComposeCluster(t *testing.T) {
	requireCompose(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Backend: testcluster.BackendCompose})
	project := c.ComposeProject()
	require.NotEmpty(t, project)
	nodes := c.Nodes()
	require.Len(t, nodes, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	require.Equal(t, n1, c.Master())

	t.Run("roles", func(t *testing.T) {
		assert.Equal(t, map[string]string{"n2": "sync", "n3": "async"}, replication(t, ctx, n1))
		assert.False(t, inRecovery(t, ctx, n1.DSN()))
		assert.True(t, inRecovery(t, ctx, n2.DSN()))
		assert.True(t, inRecovery(t, ctx, n3.DSN()))
		var clusterName string
		require.NoError(t, connect(t, ctx, n3.DSN()).QueryRow(ctx, "SHOW cluster_name").Scan(&clusterName))
		assert.Equal(t, "n3", clusterName)
	})

	t.Run("published on loopback", func(t *testing.T) {
		cfg, err := pgconn.ParseConfig(c.DSN())
		require.NoError(t, err)
		hosts := []string{net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))}
		for _, fb := range cfg.Fallbacks {
			hosts = append(hosts, net.JoinHostPort(fb.Host, strconv.Itoa(int(fb.Port))))
		}
		assert.Equal(t, []string{n1.Addr(), n2.Addr(), n3.Addr()}, hosts)
		for _, n := range nodes {
			assert.True(t, strings.HasPrefix(n.Addr(), "127.0.0.1:"), n.Addr())
		}
		out := docker(t, "ps", "--filter", "label=com.docker.compose.project="+project, "--format", "{{.Names}} {{.Ports}}")
		for _, n := range nodes {
			assert.Contains(t, out, n.Addr()+"->5432/tcp")
		}
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

	t.Run("kill", func(t *testing.T) {
		conn := connect(t, ctx, n3.DSN())
		require.NoError(t, n3.Kill())
		_, err := conn.Exec(ctx, "SELECT 1")
		require.Error(t, err, "a connection to a killed node is reset")
		_, err = net.DialTimeout("tcp", n3.Addr(), time.Second)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED, "a killed node refuses connections")
		assert.False(t, n3.Running())
		require.NoError(t, n3.Start())
		waitRow(t, ctx, n3.DSN(), 1)
	})

	t.Run("stop and start", func(t *testing.T) {
		conn := connect(t, ctx, n3.DSN())
		require.NoError(t, n3.Stop())
		_, err := conn.Exec(ctx, "SELECT 1")
		require.Error(t, err, "a connection to a stopped node fails")
		_, err = net.DialTimeout("tcp", n3.Addr(), time.Second)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
		require.NoError(t, n3.Start())
		waitRow(t, ctx, n3.DSN(), 1)
		assert.Contains(t, replication(t, ctx, n1), "n3")
	})

	t.Run("pause", func(t *testing.T) {
		require.NoError(t, n3.Pause())
		assert.True(t, n3.Running(), "a paused node counts as running")
		err := queryWithin(ctx, n3.DSN(), 500*time.Millisecond)
		assert.True(t, errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err), "a paused node must hang: %v", err)
		assert.NoError(t, queryWithin(ctx, n2.DSN(), 5*time.Second), "the others answer")
		require.NoError(t, n3.Resume())
		assert.NoError(t, queryWithin(ctx, n3.DSN(), 5*time.Second))
	})

	t.Run("partition", func(t *testing.T) {
		conn := connect(t, ctx, n3.DSN())
		require.NoError(t, n3.Partition())
		err := queryWithin(ctx, n3.DSN(), 500*time.Millisecond)
		assert.True(t, errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err), "a new connection must hang: %v", err)
		qctx, qcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err = conn.Exec(qctx, "SELECT 1")
		qcancel()
		assert.True(t, pgconn.Timeout(err), "an existing connection must hang: %v", err)
		assert.NoError(t, queryWithin(ctx, n2.DSN(), 5*time.Second), "the others answer")
		assert.NoError(t, queryWithin(ctx, n3.DirectDSN(), 5*time.Second), "the server itself is fine")

		// The node's own walreceiver is untouched, as with the local backend.
		_, err = connect(t, ctx, n1.DSN()).Exec(ctx, "INSERT INTO t VALUES (3, 'during partition')")
		require.NoError(t, err)
		waitRow(t, ctx, n3.DirectDSN(), 3)

		require.NoError(t, n3.Heal())
		assert.NoError(t, queryWithin(ctx, n3.DSN(), 5*time.Second))
	})

	t.Run("partition survives a restart", func(t *testing.T) {
		require.NoError(t, n3.Partition())
		require.NoError(t, n3.Kill())
		require.NoError(t, n3.Start())
		err := queryWithin(ctx, n3.DSN(), 500*time.Millisecond)
		assert.True(t, errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err), "still partitioned: %v", err)
		require.NoError(t, n3.Heal())
		assert.NoError(t, queryWithin(ctx, n3.DSN(), 5*time.Second))
	})

	t.Run("latency", func(t *testing.T) {
		conn := connect(t, ctx, n2.DSN())
		err := n2.SetLatency(50 * time.Millisecond)
		if err != nil {
			// A kernel without sch_netem: the backend says so.
			require.ErrorContains(t, err, "SetLatency is not supported by the compose backend on this machine")
			t.Logf("latency is not available here: %v", err)
			require.NoError(t, n2.SetLatency(0), "removing latency always works")
			return
		}
		begin := time.Now()
		_, err = conn.Exec(ctx, "SELECT 1")
		require.NoError(t, err)
		assert.GreaterOrEqual(t, time.Since(begin), 100*time.Millisecond, "a round trip is 2d longer")
		require.NoError(t, n2.SetLatency(0))
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
		assert.Equal(t, map[string]string{"n3": "sync"}, replication(t, ctx, n2), "n3 streams from n2 and took the sync place")

		require.NoError(t, c.Rejoin(ctx, n1))
		assert.True(t, inRecovery(t, ctx, n1.DSN()), "the old master came back as a replica")
		waitRow(t, ctx, n1.DSN(), 2001)
		assert.Equal(t, map[string]string{"n1": "async", "n3": "sync"}, replication(t, ctx, n2))
	})

	t.Run("stop leaves nothing", func(t *testing.T) {
		require.NoError(t, c.Stop())
		require.NoError(t, c.Stop(), "Stop is idempotent")
		label := "label=com.docker.compose.project=" + project
		assert.Empty(t, strings.TrimSpace(docker(t, "ps", "-a", "-q", "--filter", label)), "containers")
		assert.Empty(t, strings.TrimSpace(docker(t, "network", "ls", "-q", "--filter", label)), "networks")
		assert.Empty(t, strings.TrimSpace(docker(t, "volume", "ls", "-q", "--filter", label)), "volumes")
		for _, what := range [][]string{{"ps", "-a"}, {"network", "ls"}, {"volume", "ls"}} {
			assert.NotContains(t, docker(t, what...), project, "docker %s", strings.Join(what, " "))
		}
		_, err := os.Stat(c.Dir())
		assert.True(t, os.IsNotExist(err), "the cluster directory is removed")
		for _, n := range nodes {
			_, err := net.DialTimeout("tcp", n.Addr(), time.Second)
			assert.ErrorIs(t, err, syscall.ECONNREFUSED, "nothing listens on %s", n.Addr())
		}
	})
}

func TestComposeSmallerLayout(t *testing.T) {
	requireCompose(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Backend: testcluster.BackendCompose, Replicas: 1})
	nodes := c.Nodes()
	require.Len(t, nodes, 2)
	assert.Equal(t, map[string]string{"n2": "async"}, replication(t, ctx, nodes[0]), "the file's sync replica made async, as asked")
	assert.Empty(t, c.SyncReplicas())
	out := docker(t, "ps", "-a", "--filter", "label=com.docker.compose.project="+c.ComposeProject(), "--format", "{{.Names}}")
	assert.Len(t, strings.Fields(out), 2, "only the services asked for run: %s", out)
	_, err := connect(t, ctx, nodes[0].DSN()).Exec(ctx, "CREATE TABLE small (id int)")
	require.NoError(t, err, "writes do not wait for a synchronous standby")
}

// TestComposeAttach works on a running project the way a user works on
// `make compose-up`'s: a Cluster attached to it by name finds its nodes,
// credentials and master, breaks and repairs it, and leaves it running. A
// later attach (another process, for the testcluster command) finds what
// the last one left: a partition, a new master, a replica left detached by
// a promotion made behind testcluster's back, which Rejoin repairs. Status
// marks the old master, writable past its partition, as stale.
func TestComposeAttach(t *testing.T) {
	requireCompose(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	owner := testcluster.New(t, testcluster.Options{Backend: testcluster.BackendCompose})
	project := owner.ComposeProject()
	attach := func() *testcluster.Cluster {
		t.Helper()
		c, err := testcluster.Start(ctx, testcluster.Options{Backend: testcluster.BackendCompose, ComposeProject: project, Logf: t.Logf})
		require.NoError(t, err)
		return c
	}
	roles := func(c *testcluster.Cluster) []string {
		var out []string
		for _, st := range c.Status(ctx) {
			out = append(out, st.Role)
		}
		return out
	}

	// A partition of the master and a failover: two writable nodes, the
	// old one marked.
	a := attach()
	require.Len(t, a.Nodes(), 3)
	assert.Equal(t, owner.DSN(), a.DSN(), "the same addresses and credentials")
	assert.Equal(t, "n1", a.Master().Name())
	assert.Equal(t, []string{"n2"}, names(a.SyncReplicas()))
	assert.Equal(t, []string{"master", "sync", "async"}, roles(a))
	require.NoError(t, a.Nodes()[0].Partition())
	require.NoError(t, a.Failover(ctx, a.Nodes()[1]))
	assert.Equal(t, []string{"stale master", "master", "sync"}, roles(a))
	assert.Equal(t, testcluster.Faults{Partitioned: true}, a.Status(ctx)[0].Faults)
	require.NoError(t, a.Stop())
	assert.True(t, owner.Nodes()[0].Running(), "Stop leaves an attached project running")

	b := attach()
	n1, n2, n3 := b.Nodes()[0], b.Nodes()[1], b.Nodes()[2]
	assert.Equal(t, testcluster.Faults{Partitioned: true}, n1.Faults(), "the partition set by another attach")
	assert.Equal(t, n2, b.Master(), "the writable node on the newest timeline")
	require.NoError(t, n1.Heal())
	require.NoError(t, b.Rejoin(ctx, n1))
	// The master killed and n3 promoted by hand, as with docker kill and
	// psql: n1 still follows the dead n2.
	require.NoError(t, n2.Kill())
	_, err := connect(t, ctx, n3.DSN()).Exec(ctx, "SELECT pg_promote()")
	require.NoError(t, err)
	require.NoError(t, b.Stop())

	c := attach()
	n1, n2, n3 = c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	assert.Equal(t, n3, c.Master(), "the only writable node")
	assert.Equal(t, "detached", c.Status(ctx)[0].Role, "n1, left on the old timeline, is no replica of n3's")
	require.NoError(t, c.Rejoin(ctx, n1))
	require.NoError(t, c.Rejoin(ctx, n2))
	assert.Equal(t, map[string]string{"n1": "async", "n2": "async"}, replication(t, ctx, n3))
	require.NoError(t, c.Converge(ctx))
	converged := roles(c)
	assert.Equal(t, "master", converged[2], "converged around n3: %v", converged)
	assert.ElementsMatch(t, []string{"sync", "async"}, converged[:2], "the file's one sync replica restored: %v", converged)
	require.NoError(t, c.Stop())
}

func names(nodes []*testcluster.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name())
	}
	return out
}
