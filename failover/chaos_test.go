package failover_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/internal/chaos"
	"github.com/pgxha/pgxha/testcluster"
)

// The chaos suite: every scenario runs under continuous load (writers
// inserting numbered rows through the master, readers reading through
// replicas) against a real cluster, and asserts what happened. Set
// PGXHA_TESTCLUSTER=compose to run it against docker compose.

const (
	writers = 4
	readers = 4
)

// pgxhaClient drives the library the way an application would.
type pgxhaClient struct{ m *hasql.Manager }

func (c pgxhaClient) Write(ctx context.Context, writer, seq int) error {
	_, err := c.m.Master().Exec(ctx, chaos.InsertSQL, "pgxha", writer, seq)
	return err
}

func (c pgxhaClient) Read(ctx context.Context, reader int) error {
	var seq int
	return c.m.Replica().QueryRow(ctx, chaos.ReadSQL, "pgxha", reader%writers).Scan(&seq)
}

// rig is a cluster, a manager and a load.
type rig struct {
	t    *testing.T
	ctx  context.Context
	c    *testcluster.Cluster
	m    *hasql.Manager
	load *chaos.Load
}

func newRig(t *testing.T, opts testcluster.Options, dsnParams string) *rig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	c := testcluster.New(t, opts)
	dsn := c.DSN()
	if c.PgBouncer() == testcluster.PgBouncerTransaction {
		// Behind transaction-mode PgBouncer the application's statements
		// cannot be prepared (see the README's PgBouncer section).
		dsn += "&default_query_exec_mode=simple_protocol"
	}
	if dsnParams != "" {
		dsn += "&" + dsnParams
	}
	m, err := hasql.New(ctx, dsn, hasql.WithLogger(testLogger(t)))
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, len(c.Nodes())-1))
	require.NoError(t, chaos.CreateTable(ctx, m.Master()))
	// Readers must find the table on every replica, the async one too.
	lsn, err := m.CurrentLSN(ctx)
	require.NoError(t, err)
	for _, n := range c.Replicas() {
		conn, err := n.Conn(ctx)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			var replayed bool
			err := conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn.String()).Scan(&replayed)
			return err == nil && replayed
		}, 30*time.Second, 5*time.Millisecond, "%s replays the table's creation", n)
		conn.Close(ctx)
	}
	return &rig{t: t, ctx: ctx, c: c, m: m}
}

// start starts the load and waits until it runs.
func (r *rig) start() {
	r.t.Helper()
	// Operations wait for a node rather than fail, up to their timeout: give
	// them longer than the slowest failover of a backend (the compose one
	// rewinding a replica that went past the new master takes 15s or so),
	// so that an error means the library gave up, not the test.
	r.load = chaos.Start(pgxhaClient{r.m}, chaos.Config{Writers: writers, Readers: readers, OpTimeout: 30 * time.Second})
	r.t.Cleanup(func() { r.load.Stop() })
	require.NoError(r.t, r.load.WaitWrites(r.ctx, 50))
	require.NoError(r.t, r.load.WaitReads(r.ctx, 50))
}

// masterConn connects to a node past its fault proxy.
func (r *rig) conn(n *testcluster.Node) *pgx.Conn {
	r.t.Helper()
	conn, err := n.Conn(r.ctx)
	require.NoError(r.t, err)
	r.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// finish waits for writes after the fault, stops the load and checks that
// no acknowledged write is missing on the master.
func (r *rig) finish(fault time.Time, master *testcluster.Node) *chaos.Result {
	r.t.Helper()
	require.NoError(r.t, r.load.WaitWrites(r.ctx, 100), "writes resume")
	res := r.load.Stop()
	assert.Positive(r.t, res.AckedAfter(fault), "writes acknowledged after the fault")
	lost, err := res.Lost(r.ctx, r.conn(master), "pgxha")
	require.NoError(r.t, err)
	assert.Empty(r.t, lost, "every acknowledged write is on the master %s", master)
	assert.False(r.t, res.HasCode("25006"), "no write was sent to a read-only node")
	if d, ok := res.Outage(fault); ok {
		r.t.Logf("write outage %s, %d write errors, %d read errors, %d writes acknowledged", d.Round(time.Millisecond),
			len(res.WriteErrors()), len(res.ReadErrors()), len(res.Acked()))
	}
	for _, op := range res.WriteErrors() {
		r.t.Logf("write error at +%s: %v", op.End.Sub(fault).Round(time.Millisecond), op.Err)
	}
	for _, op := range res.ReadErrors() {
		r.t.Logf("read error at +%s: %v", op.End.Sub(fault).Round(time.Millisecond), op.Err)
	}
	return res
}

func TestMasterCrashFailover(t *testing.T) {
	r := newRig(t, testcluster.Options{}, "")
	n1, n2 := r.c.Nodes()[0], r.c.Nodes()[1]
	r.start()
	fault := time.Now()
	require.NoError(t, n1.Kill())
	require.NoError(t, r.c.Failover(r.ctx, n2))
	res := r.finish(fault, n2)
	assert.LessOrEqual(t, len(res.WriteErrors()), writers, "only the writes in flight at the crash fail")
	assert.LessOrEqual(t, len(res.ReadErrors()), readers)
	assert.Equal(t, hasql.RoleMaster, r.m.Nodes()[1].Role)
}

func TestMasterStopFailover(t *testing.T) {
	r := newRig(t, testcluster.Options{}, "")
	n1, n2 := r.c.Nodes()[0], r.c.Nodes()[1]
	r.start()
	fault := time.Now()
	require.NoError(t, n1.Stop())
	require.NoError(t, r.c.Failover(r.ctx, n2))
	res := r.finish(fault, n2)
	assert.LessOrEqual(t, len(res.WriteErrors()), writers, "only the writes in flight at the shutdown fail")
	assert.LessOrEqual(t, len(res.ReadErrors()), readers)
}

func TestMasterHangFailover(t *testing.T) {
	r := newRig(t, testcluster.Options{}, "")
	n1, n2 := r.c.Nodes()[0], r.c.Nodes()[1]
	r.start()
	fault := time.Now()
	require.NoError(t, n1.Pause())
	require.NoError(t, r.c.Failover(r.ctx, n2))
	res := r.finish(fault, n2)
	assert.LessOrEqual(t, len(res.WriteErrors()), writers, "only the writes in flight at the hang fail")
	assert.LessOrEqual(t, len(res.ReadErrors()), readers)
	require.NoError(t, n1.Resume())
	require.Eventually(t, func() bool { return r.m.Nodes()[0].Writable }, 10*time.Second, 5*time.Millisecond)
	conn, err := r.m.AcquireMaster(r.ctx)
	require.NoError(t, err)
	assert.Equal(t, n2.Addr(), addrOf(conn.Conn()),
		"the resumed old master, on the older timeline, gets no writes")
	conn.Release()
}

func TestMasterPartitionFailover(t *testing.T) {
	r := newRig(t, testcluster.Options{}, "")
	n1, n2 := r.c.Nodes()[0], r.c.Nodes()[1]
	r.start()
	fault := time.Now()
	require.NoError(t, n1.Partition())
	require.NoError(t, r.c.Failover(r.ctx, n2))
	res := r.finish(fault, n2)
	assert.LessOrEqual(t, len(res.WriteErrors()), writers, "only the writes in flight at the partition fail")
	assert.LessOrEqual(t, len(res.ReadErrors()), readers)
}

func TestReplicaFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(*testcluster.Node) error
		heal  func(*testcluster.Node) error
	}{
		{"crash", (*testcluster.Node).Kill, (*testcluster.Node).Start},
		{"hang", (*testcluster.Node).Pause, (*testcluster.Node).Resume},
		{"partition", (*testcluster.Node).Partition, (*testcluster.Node).Heal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, testcluster.Options{}, "")
			n1, n3 := r.c.Nodes()[0], r.c.Nodes()[2]
			r.start()
			fault := time.Now()
			require.NoError(t, tc.fault(n3))
			require.Eventually(t, func() bool {
				st := r.m.Nodes()[2]
				return st.Role == hasql.RoleUnknown
			}, 30*time.Second, 5*time.Millisecond, "the replica is marked down")
			require.NoError(t, r.load.WaitReads(r.ctx, 200), "reads continue on the other replica")
			res := r.finish(fault, n1)
			assert.LessOrEqual(t, len(res.ReadErrors()), readers, "no read error beyond those in flight at the fault")
			assert.Empty(t, res.WriteErrors(), "writes do not notice an async replica's fault")
			assert.Positive(t, res.ReadsAfter(fault))
			require.NoError(t, tc.heal(n3))
			require.Eventually(t, func() bool { return r.m.Nodes()[2].Role == hasql.RoleAsyncReplica },
				30*time.Second, 5*time.Millisecond, "the replica comes back")
		})
	}
}

func TestSplitBrainNewerTimelineWins(t *testing.T) {
	r := newRig(t, testcluster.Options{}, "")
	n1, n2 := r.c.Nodes()[0], r.c.Nodes()[1]
	r.start()
	fault := time.Now()
	require.NoError(t, n2.Promote(r.ctx), "a replica promoted while the master still runs")
	require.Eventually(t, func() bool {
		st := r.m.Nodes()
		return st[1].Role == hasql.RoleMaster && st[0].SplitBrain && st[1].SplitBrain
	}, 10*time.Second, time.Millisecond, "the split brain is seen and reported")
	res := r.finish(fault, n2)
	assert.LessOrEqual(t, len(res.WriteErrors()), writers, "only writes in flight on the old master fail")
	st := r.m.Stat()
	assert.True(t, st.SplitBrain)
	assert.Equal(t, n2.Addr(), st.Master)

	// The old master comes back as a replica: the split brain is over.
	require.NoError(t, r.c.Rejoin(r.ctx, n1))
	require.Eventually(t, func() bool {
		s := r.m.Stat()
		return !s.SplitBrain && s.Nodes[0].Role.IsReplica()
	}, 30*time.Second, 5*time.Millisecond)
}

func TestSplitBrainSameTimelineRefusesWrites(t *testing.T) {
	r := newRig(t, testcluster.Options{}, "")
	n1, n2, n3 := r.c.Nodes()[0], r.c.Nodes()[1], r.c.Nodes()[2]
	require.NoError(t, n1.Kill())
	require.NoError(t, n2.Promote(r.ctx))
	require.NoError(t, n3.Promote(r.ctx))
	var sb *hasql.SplitBrainError
	require.Eventually(t, func() bool {
		conn, err := r.m.AcquireMaster(r.ctx)
		if err == nil {
			conn.Release()
		}
		return errors.As(err, &sb)
	}, 10*time.Second, 5*time.Millisecond, "two writable nodes on timeline 2: writes refused")
	assert.ErrorIs(t, sb, hasql.ErrSplitBrain)
	assert.ElementsMatch(t, []string{n2.Addr(), n3.Addr()}, sb.Addrs, "the error names both nodes")
	assert.Contains(t, sb.Error(), "split brain")
	assert.Equal(t, uint32(2), sb.Timeline)

	require.NoError(t, n3.Stop(), "one of them goes away")
	conn, err := r.m.AcquireMaster(r.ctx)
	require.NoError(t, err, "writes resume once only one is writable")
	assert.Equal(t, n2.Addr(), addrOf(conn.Conn()))
	conn.Release()
}

func TestAllNodesDownThenUp(t *testing.T) {
	r := newRig(t, testcluster.Options{}, "")
	r.start()
	fault := time.Now()
	for _, n := range r.c.Nodes() {
		require.NoError(t, n.Kill())
	}
	require.Eventually(t, func() bool { return r.m.Stat().Master == "" }, 10*time.Second, time.Millisecond)
	for _, n := range r.c.Nodes() {
		require.NoError(t, n.Start())
	}
	res := r.finish(fault, r.c.Nodes()[0])
	assert.LessOrEqual(t, len(res.WriteErrors()), writers, "writes wait for the master instead of failing")
	require.NoError(t, r.m.WaitReady(r.ctx, 1, 2), "the manager recovered by itself")
}

func TestOldMasterRejoinsAndServesReads(t *testing.T) {
	r := newRig(t, testcluster.Options{}, "")
	n1, n2 := r.c.Nodes()[0], r.c.Nodes()[1]
	r.start()
	fault := time.Now()
	require.NoError(t, n1.Kill())
	require.NoError(t, r.c.Failover(r.ctx, n2))
	require.NoError(t, r.load.WaitWrites(r.ctx, 50))
	require.NoError(t, r.c.Rejoin(r.ctx, n1))
	require.Eventually(t, func() bool { return r.m.Nodes()[0].Role.IsReplica() }, 30*time.Second, 5*time.Millisecond)
	// Every read goes to a replica; n1 takes some once its pool has
	// connections (a replica that just started may take a moment to
	// accept them, and a full pool sends the read to another replica).
	served := false
	for !served && r.ctx.Err() == nil {
		conn, err := r.m.AcquireReplica(r.ctx)
		require.NoError(t, err)
		served = addrOf(conn.Conn()) == n1.Addr()
		var inRecovery bool
		require.NoError(t, conn.QueryRow(r.ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery))
		assert.True(t, inRecovery)
		conn.Release()
	}
	assert.True(t, served, "the rejoined old master serves reads")
	r.finish(fault, n2)
}

// TestPatroniFailoverClientFollows kills the master of a Patroni-managed
// cluster: Patroni, not the test, promotes the sync replica when the leader
// key expires, and the client follows without help.
func TestPatroniFailoverClientFollows(t *testing.T) {
	r := newRig(t, testcluster.Options{Backend: testcluster.BackendPatroni}, "")
	old := r.c.Master()
	require.NotNil(t, old)
	// Writes wait for the new master: give them longer than Patroni's ttl.
	r.load = chaos.Start(pgxhaClient{r.m}, chaos.Config{Writers: writers, Readers: readers, OpTimeout: 30 * time.Second})
	t.Cleanup(func() { r.load.Stop() })
	require.NoError(t, r.load.WaitWrites(r.ctx, 50))
	fault := time.Now()
	require.NoError(t, old.Kill())
	var next *testcluster.Node
	require.Eventually(t, func() bool {
		next = r.c.Master()
		return next != nil && next != old
	}, time.Minute, 50*time.Millisecond, "Patroni promotes a replica on its own")
	res := r.finish(fault, next)
	assert.LessOrEqual(t, len(res.WriteErrors()), writers, "writes wait for Patroni's promotion instead of failing")
	st := r.m.Stat()
	assert.Equal(t, next.Addr(), st.Master, "the manager follows Patroni's choice")
}
