package checker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/checker"
	"github.com/pgxha/pgxha/testcluster"
)

func TestLSN(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want checker.LSN
		err  bool
	}{
		{"0/0", 0, false},
		{"0/16B3748", 0x16B3748, false},
		{"16/B374D848", 0x16_B374D848, false},
		{"FFFFFFFF/FFFFFFFF", ^checker.LSN(0), false},
		{"", 0, true},
		{"16B374D848", 0, true},
		{"1/G", 0, true},
		{"100000000/0", 0, true},
	} {
		got, err := checker.ParseLSN(tc.in)
		if tc.err {
			assert.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
		if tc.in != "0/0" {
			assert.Equal(t, tc.in, got.String())
		}
	}
}

// pg_stat_wal_receiver.conninfo writes values as they are, unquoted: a
// value runs to the next libpq keyword. The name is then matched as the
// master shows it (cleaned to printable ASCII, cut to 63 bytes).
func TestReceiverConnInfo(t *testing.T) {
	ci := `user=postgres password=******** channel_binding=prefer dbname=replication host=127.0.0.1 port=5432 application_name=n2 east fallback_application_name=n2\east sslmode=disable`
	assert.Equal(t, "n2 east", checker.ReceiverConnInfoValue(ci, "application_name"))
	assert.Equal(t, `n2\east`, checker.ReceiverConnInfoValue(ci, "fallback_application_name"))
	assert.Equal(t, "127.0.0.1", checker.ReceiverConnInfoValue(ci, "host"))
	assert.Equal(t, "5432", checker.ReceiverConnInfoValue(ci, "port"))
	assert.Equal(t, "postgres", checker.ReceiverConnInfoValue(ci, "user"))
	assert.Equal(t, "disable", checker.ReceiverConnInfoValue(ci, "sslmode"))
	assert.Equal(t, "", checker.ReceiverConnInfoValue(ci, "name"))
	assert.Equal(t, "a=b c", checker.ReceiverConnInfoValue("application_name=a=b c port=1", "application_name"))

	long := strings.Repeat("x", 70)
	assert.Equal(t, long[:63], checker.WalsenderName(long, "15.4"))
	assert.Equal(t, "caf??", checker.WalsenderName("café", "15.4 (Debian 15.4-1)"))
	assert.Equal(t, `caf\xc3\xa9`, checker.WalsenderName("café", "16.1"))
	for _, v := range []string{"18beta1", "18rc1", "19devel"} {
		assert.Equal(t, `caf\xc3\xa9`, checker.WalsenderName("café", v), v)
	}
	assert.Equal(t, "n2 east", checker.WalsenderName("n2 east", ""))
}

func TestConnInfoValue(t *testing.T) {
	ci := `user=postgres password=******** channel_binding=prefer dbname=replication host=127.0.0.1 port=5432 application_name='my app' fallback_application_name=walreceiver sslmode=disable`
	assert.Equal(t, "my app", checker.ConnInfoValue(ci, "application_name"))
	assert.Equal(t, "5432", checker.ConnInfoValue(ci, "port"))
	assert.Equal(t, "", checker.ConnInfoValue(ci, "cluster_name"))
	assert.Equal(t, `it's`, checker.ConnInfoValue(`x = 'it\'s'`, "x"))
	assert.Equal(t, "", checker.ConnInfoValue("garbage", "x"))
}

func TestPostgreSQLChecker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	check := func(n *testcluster.Node) checker.Result {
		t.Helper()
		conn, err := pgx.Connect(ctx, n.DSN())
		require.NoError(t, err)
		defer conn.Close(ctx)
		res, err := checker.PostgreSQL().Check(ctx, conn)
		require.NoError(t, err)
		return res
	}

	m := check(n1)
	assert.False(t, m.InRecovery)
	assert.False(t, m.ReadOnly)
	assert.Equal(t, uint32(1), m.Timeline)
	assert.NotZero(t, m.LSN)
	assert.Equal(t, "n1", m.Name)
	assert.Equal(t, int64(16<<20), m.WalSegmentSize, "initdb's default wal_segment_size")
	require.Len(t, m.Replicas, 2)
	states := map[string]string{}
	for _, r := range m.Replicas {
		states[r.ApplicationName] = r.SyncState
		assert.Equal(t, "streaming", r.State)
		assert.Equal(t, "127.0.0.1", r.ClientAddr)
		assert.NotZero(t, r.ReplayLSN)
	}
	assert.Equal(t, map[string]string{"n2": "sync", "n3": "async"}, states)

	for _, n := range []*testcluster.Node{n2, n3} {
		r := check(n)
		assert.True(t, r.InRecovery)
		assert.True(t, r.ReadOnly)
		assert.Equal(t, n.Name(), r.Name, "named by the walreceiver's application_name")
		assert.Equal(t, uint32(1), r.Timeline)
		assert.Empty(t, r.Replicas)
		assert.False(t, r.ReplayPaused)
		assert.NotZero(t, r.ReceiveLSN)
	}

	require.NoError(t, n3.PauseReplay(ctx))
	conn, err := pgx.Connect(ctx, n1.DSN())
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE TABLE t AS SELECT generate_series(1, 10000) AS id")
	require.NoError(t, err)
	after := check(n1)
	assert.Greater(t, after.LSN, m.LSN, "the master's LSN moves with writes")
	paused := check(n3)
	assert.True(t, paused.ReplayPaused)
	assert.Less(t, paused.LSN, after.LSN, "a paused replica's replay LSN stays behind")

	// Unprepared, as behind a pooler in transaction mode: the same.
	simpleCfg, err := pgx.ParseConfig(n1.DSN())
	require.NoError(t, err)
	simpleCfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	simple, err := pgx.ConnectConfig(ctx, simpleCfg)
	require.NoError(t, err)
	defer simple.Close(ctx)
	for range 2 { // the master's timeline read, then remembered
		s, err := checker.PostgreSQL().Check(ctx, simple)
		require.NoError(t, err)
		assert.False(t, s.InRecovery)
		assert.Equal(t, uint32(1), s.Timeline)
		assert.Len(t, s.Replicas, 2)
	}

	// One connection through a promotion: the timeline it remembers for a
	// master is read when the server leaves recovery.
	live, err := pgx.Connect(ctx, n2.DSN())
	require.NoError(t, err)
	defer live.Close(ctx)
	before, err := checker.PostgreSQL().Check(ctx, live)
	require.NoError(t, err)
	assert.True(t, before.InRecovery)
	assert.Equal(t, uint32(1), before.Timeline)

	require.NoError(t, n1.Kill())
	// n3's walreceiver lost its master: its timeline comes from its
	// control data while no walreceiver reports one.
	orphan := check(n3)
	assert.True(t, orphan.InRecovery)
	assert.Equal(t, uint32(1), orphan.Timeline)
	require.NoError(t, c.Failover(ctx, n2))
	promoted := check(n2)
	assert.False(t, promoted.InRecovery)
	assert.Equal(t, uint32(2), promoted.Timeline, "promotion starts timeline 2")
	for range 2 {
		again, err := checker.PostgreSQL().Check(ctx, live)
		require.NoError(t, err)
		assert.False(t, again.InRecovery)
		assert.Equal(t, uint32(2), again.Timeline, "a connection that saw the server in recovery reads its new timeline")
	}
}

func TestProbePromotion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		cfg, err := pgx.ParseConfig(n2.DSN())
		require.NoError(t, err)
		cfg.DefaultQueryExecMode = mode
		conn, err := pgx.ConnectConfig(ctx, cfg)
		require.NoError(t, err)
		p, err := checker.ProbePromotion(ctx, conn)
		require.NoError(t, err, mode.String())
		assert.Nil(t, p, "a replica is not promoted (%s)", mode)
		conn.Close(ctx)
	}

	conn, err := pgx.Connect(ctx, n2.DSN())
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.NoError(t, n1.Kill())
	require.NoError(t, n2.Promote(ctx))
	p, err := checker.ProbePromotion(ctx, conn)
	require.NoError(t, err)
	require.NotNil(t, p, "the promoted node says so")
	assert.False(t, p.ReadOnly)
	assert.Equal(t, uint32(2), p.Timeline, "promotion starts timeline 2")
	assert.NotZero(t, p.LSN)
	r, err := checker.PostgreSQL().Check(ctx, conn)
	require.NoError(t, err)
	assert.False(t, r.InRecovery)
	assert.Equal(t, r.Timeline, p.Timeline, "the probe and the check agree")
}

// TestReceiverHiddenTellsAHiddenWalreceiverFromNone: a check user that is
// the replication role itself, without pg_read_all_stats, sees only the
// pid of a replica's walreceiver: ReceiverHidden says one runs. With the
// walreceiver stopped (primary_conninfo emptied), it is false, as it is
// for the superuser, who sees the walreceiver's details.
func TestReceiverHiddenTellsAHiddenWalreceiverFromNone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	exec := func(n *testcluster.Node, sql string) {
		t.Helper()
		conn, err := n.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		require.NoError(t, err)
	}
	exec(n1, "CREATE ROLE repl LOGIN REPLICATION PASSWORD 'repl-pw'")
	check := func(dsn string) (checker.Result, error) {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return checker.Result{}, err
		}
		defer conn.Close(ctx)
		return checker.PostgreSQL().Check(ctx, conn)
	}
	replDSN := strings.Replace(n2.DSN(), "postgres:pgxha@", "repl:repl-pw@", 1)
	require.NotEqual(t, replDSN, n2.DSN())
	var hidden checker.Result
	require.Eventually(t, func() bool {
		var err error
		hidden, err = check(replDSN) // n2 replays the role first
		return err == nil
	}, 30*time.Second, 10*time.Millisecond, "the replication role logs in on n2")
	assert.True(t, hidden.InRecovery)
	assert.True(t, hidden.ReceiverHidden, "n2's walreceiver runs, its details hidden from the replication role: %+v", hidden)
	assert.Zero(t, hidden.ReceiveTimeline, "hidden from the replication role")
	assert.Empty(t, hidden.UpstreamHost, "hidden from the replication role")

	full, err := check(n2.DSN())
	require.NoError(t, err)
	assert.False(t, full.ReceiverHidden, "the superuser sees the walreceiver: %+v", full)
	assert.Equal(t, uint32(1), full.ReceiveTimeline)

	m, err := check(strings.Replace(n1.DSN(), "postgres:pgxha@", "repl:repl-pw@", 1))
	require.NoError(t, err)
	assert.False(t, m.ReceiverHidden, "a master has no walreceiver")

	exec(n2, "ALTER SYSTEM SET primary_conninfo = ''")
	exec(n2, "SELECT pg_reload_conf()")
	require.Eventually(t, func() bool {
		res, err := check(n2.DSN())
		return err == nil && res.ReceiveTimeline == 0
	}, 30*time.Second, 10*time.Millisecond, "n2's walreceiver stops")
	for _, dsn := range []string{replDSN, n2.DSN()} {
		res, err := check(dsn)
		require.NoError(t, err)
		assert.True(t, res.InRecovery)
		assert.False(t, res.ReceiverHidden, "no walreceiver runs on n2: %+v", res)
	}
}
