//go:build linux

package hasql_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A replica that replayed past the point where the new master's timeline
// began (it is on a branch the master does not have) and is pointed at the
// new master is listed by the master's walsender while it streams the
// common part: it must serve no read after a token of the new master,
// whether the check user sees its walreceiver's timeline (a superuser) or
// not (no pg_monitor).
func TestWrongBranchReplicaNeverServesAfter(t *testing.T) { wrongBranch(t, false) }

// The same, read by a user without pg_monitor (the replicas' received
// timeline is hidden from it).
func TestWrongBranchReplicaNeverServesAfterRestricted(t *testing.T) { wrongBranch(t, true) }

func wrongBranch(t *testing.T, restricted bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 0})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	createNotes(t, ctx, m, n1)
	rm := m
	if restricted {
		rm = readerManager(t, ctx, c, 0)
		t.Logf("restricted view: %v", rm.Nodes())
	}

	stopReceiver(t, ctx, n2)
	_, ahead, err := m.Master().ExecToken(ctx, "INSERT INTO notes SELECT g FROM generate_series(100, 3000) g")
	require.NoError(t, err)
	replayedOn(t, ctx, n3, ahead.LSN)

	require.NoError(t, n1.Kill())
	require.NoError(t, n2.Promote(ctx))
	waitRole(t, m, "n2", hasql.RoleMaster)

	conn, err := n3.Conn(ctx)
	require.NoError(t, err)
	var ci string
	require.NoError(t, conn.QueryRow(ctx, "SHOW primary_conninfo").Scan(&ci))
	conn.Close(ctx)
	_, n1port, _ := strings.Cut(n1.Addr(), ":")
	_, n2port, _ := strings.Cut(n2.Addr(), ":")
	ci2 := strings.Replace(ci, "port="+n1port, "port="+n2port, 1)
	require.NotEqual(t, ci, ci2, "conninfo %q, n1 %s", ci, n1.DirectAddr())
	execOn(t, ctx, n3, "ALTER SYSTEM SET primary_conninfo = '"+strings.ReplaceAll(ci2, "'", "''")+"'", "SELECT pg_reload_conf()")

	_, tok, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (7)")
	require.NoError(t, err)
	require.EqualValues(t, 2, tok.Timeline)
	require.Less(t, tok.LSN, ahead.LSN, "n3 is numerically past the new master's token")
	_, _, err = m.Master().ExecToken(ctx, "INSERT INTO notes SELECT g FROM generate_series(10000, 16000) g")
	require.NoError(t, err)

	walsenders := func() string {
		conn, err := n2.Conn(ctx)
		if err != nil {
			return err.Error()
		}
		defer conn.Close(ctx)
		var out string
		_ = conn.QueryRow(ctx, "SELECT coalesce(string_agg(application_name || ' ' || state || ' sent=' || coalesce(sent_lsn::text, '-'), '; '), 'none') FROM pg_stat_replication").Scan(&out)
		return out
	}
	n3state := func() string {
		conn, err := n3.Conn(ctx)
		if err != nil {
			return err.Error()
		}
		defer conn.Close(ctx)
		var out string
		_ = conn.QueryRow(ctx, "SELECT coalesce((SELECT status || ' tli=' || received_tli FROM pg_stat_wal_receiver), 'no walreceiver') || ' replay=' || pg_last_wal_replay_lsn()::text").Scan(&out)
		return out
	}
	t.Logf("n2's walsenders: %s; n3: %s", walsenders(), n3state())
	deadline := time.Now().Add(6 * time.Second)
	reads, onN3 := 0, 0
	for time.Now().Before(deadline) {
		found, onReplica, err := readAfter(ctx, rm, tok, "notes", 7)
		reads++
		if err == nil && onReplica {
			onN3++
		}
		if err == nil && found == 0 {
			t.Logf("n2's walsenders: %s; n3: %s", walsenders(), n3state())
		}
		require.False(t, err == nil && found == 0, "read %d after %s served without the write (on replica: %v); nodes: %v", reads, tok, onReplica, rm.Nodes())
	}
	t.Logf("%d reads, %d on a replica; n3: %+v", reads, onN3, statusOf(rm, "n3"))
}

// Through PgBouncer in transaction mode (simple protocol, as
// docs/pgbouncer.md asks): ExecToken's token, a read after it while the
// replica's replay is paused (the master serves), then after it resumes.

// After an ordinary failover (n2 promoted, n3 pointed at it), a check user
// without pg_monitor, which sees no walreceiver's timeline, still finds n3,
// which streams the new master's timeline, a replica within a few checks,
// not only at its next restartpoint (checkpoint_timeout): the timeline its
// control data shows lags what it replays. Reads after a position skip it
// until then (see TestWrongBranchReplicaNeverServesAfterRestricted).
func TestRestrictedReplicaBackAfterFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 0})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	createNotes(t, ctx, m, n1)
	rm := readerManager(t, ctx, c, 2)

	require.NoError(t, n1.Kill())
	require.NoError(t, c.Failover(ctx, n2))
	waitRole(t, m, "n2", hasql.RoleMaster)
	waitRole(t, rm, "n2", hasql.RoleMaster)
	_, _, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (1)")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return roles(m)["n3"].IsReplica() }, 30*time.Second, 10*time.Millisecond,
		"n3 follows n2 (pg_monitor's view): %v", m.Nodes())
	require.Eventually(t, func() bool { return roles(rm)["n3"].IsReplica() }, 30*time.Second, 10*time.Millisecond,
		"n3 follows n2 (without pg_monitor): %+v", statusOf(rm, "n3"))
}
