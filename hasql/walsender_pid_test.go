package hasql_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestReusedWalsenderPidBetweenReads: the master's check connection names
// walsenders by pid, and asks their names only when it has reason to. n3
// moves to cascade from n2, so that its walsender on the master (pid P)
// exits, and n2's walsender restarts and gets P from the kernel
// (ns_last_pid makes now what a pid wrap does in time), all between two
// reads of the master's walsenders; n2's new walsender is soon further
// along than n3's was. The next read lists P and no longer n2's old pid,
// and n3's check showed its upstream changed: the walsenders are named
// afresh, and P is n2's. (Before, P kept n3's name: n3, cascading with its
// replay paused, was called sync with n2's positions and served every
// SyncOnly read, and n2 was detached.)
func TestReusedWalsenderPidBetweenReads(t *testing.T) {
	last, err := os.ReadFile("/proc/sys/kernel/ns_last_pid")
	if err == nil {
		err = os.WriteFile("/proc/sys/kernel/ns_last_pid", last, 0)
	}
	if err != nil {
		// Only root steers the kernel's pids.
		t.Skipf("cannot steer pid allocation (root on Linux only): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	var trace syncBuffer
	m, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(quiet), hasql.WithDecisionTrace(&trace))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	mc, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer mc.Close(ctx)
	n2c, err := n2.Conn(ctx)
	require.NoError(t, err)
	defer n2c.Close(ctx)
	n3c, err := n3.Conn(ctx)
	require.NoError(t, err)
	defer n3c.Close(ctx)
	execOn(t, ctx, n1, "CREATE TABLE marks (v int)")

	var conninfo2, conninfo3 string
	require.NoError(t, n2c.QueryRow(ctx, "SHOW primary_conninfo").Scan(&conninfo2))
	require.NoError(t, n3c.QueryRow(ctx, "SHOW primary_conninfo").Scan(&conninfo3))
	setConninfo := func(conn *pgx.Conn, ci string) {
		_, err := conn.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = '"+strings.ReplaceAll(ci, "'", "''")+"'")
		require.NoError(t, err)
		_, err = conn.Exec(ctx, "SELECT pg_reload_conf()")
		require.NoError(t, err)
	}
	senderPid := func(name string) int {
		var pid int
		require.NoError(t, mc.QueryRow(ctx, "SELECT coalesce((SELECT pid FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'), 0)", name).Scan(&pid))
		return pid
	}
	gone := func(name string) bool {
		var k int
		require.NoError(t, mc.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1", name).Scan(&k))
		return k == 0
	}
	masterRead := func(what string, after time.Time) traceEntry {
		var read traceEntry
		waitUntil(t, ctx, what, func() bool {
			for _, e := range masterChecksIn(trace.String(), after) {
				if !e.Result.ReplicasCached {
					read = e
					return true
				}
			}
			return false
		})
		return read
	}
	names := func(e traceEntry) (out []string) {
		for _, r := range e.Result.Replicas {
			out = append(out, r.ApplicationName)
		}
		return out
	}
	allCheckedAfter := func(at time.Time) bool {
		for _, st := range m.Nodes() {
			if !st.LastCheck.After(at) {
				return false
			}
		}
		return true
	}

	cascade := "host=127.0.0.1 port=" + portStr(n2.DirectAddr()) + " user=postgres password=pgxha application_name=n3"
	reused := false
	for attempt := 1; attempt <= 60 && !reused; attempt++ {
		waitUntil(t, ctx, "n3 streams from the master", func() bool { return senderPid("n3") != 0 })
		p3 := senderPid("n3")
		// A master read that names n3's walsender, then every node checked:
		// the swap starts just after a tick.
		r := masterRead("a master read that lists n3", time.Now())
		if !slices.Contains(names(r), "n3") {
			continue
		}
		waitUntil(t, ctx, "every node checked after that read", func() bool { return allCheckedAfter(r.Began) })
		start := time.Now()
		setConninfo(n3c, cascade)
		waitUntil(t, ctx, "n3's walsender on the master gone", func() bool { return gone("n3") })
		setConninfo(n2c, "")
		waitUntil(t, ctx, "n2's walsender gone", func() bool { return gone("n2") })
		require.NoError(t, os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(p3-2)), 0))
		setConninfo(n2c, conninfo2)
		waitUntil(t, ctx, "n2 streams again", func() bool { return senderPid("n2") != 0 })
		p2 := senderPid("n2")
		var between []traceEntry
		for _, e := range masterChecksIn(trace.String(), start) {
			if !e.Result.ReplicasCached {
				between = append(between, e) // a read between: it forgot the pid
			}
		}
		t.Logf("attempt %d: n3's walsender was pid %d, n2's is now pid %d; swap took %s; master reads meanwhile: %d",
			attempt, p3, p2, time.Since(start), len(between))
		if reused = p2 == p3 && len(between) == 0; !reused {
			setConninfo(n3c, conninfo3)
			setConninfo(n2c, conninfo2)
		}
	}
	require.True(t, reused, "no attempt got the pid reused between two reads")

	_, err = n3c.Exec(ctx, "SELECT pg_wal_replay_pause()")
	require.NoError(t, err)
	execOn(t, ctx, n1, "INSERT INTO marks SELECT 1000 FROM generate_series(1, 200000)")
	var behind int64
	require.NoError(t, mc.QueryRow(ctx, "SELECT pg_current_wal_lsn() - $1::pg_lsn", func() string {
		var l string
		require.NoError(t, n3c.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text").Scan(&l))
		return l
	}()).Scan(&behind))
	t.Logf("n3 is %d bytes behind the master", behind)
	require.Greater(t, behind, int64(1<<20), "n3 is behind")

	// Two master reads after the swap, every node checked after the second.
	first := masterRead("a master read after the swap", time.Now())
	read := masterRead("another master read", first.Began)
	waitUntil(t, ctx, "every node checked after that read", func() bool { return allCheckedAfter(read.At) })
	t.Logf("the master's walsenders, first read: %+v", first.Result.Replicas)
	t.Logf("the master's walsenders, second read: %+v", read.Result.Replicas)
	for _, st := range m.Nodes() {
		t.Logf("%s: role %s, lag %d bytes known=%v, detached %q", st.Name, st.Role, st.LagBytes, st.LagKnown, st.Detached)
	}
	var truth string
	require.NoError(t, mc.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text || ' ' || string_agg(format('%s pid %s %s %s sent %s', application_name, pid, state, sync_state, sent_lsn), '; ') FROM pg_stat_replication").Scan(&truth))
	t.Logf("the master says: %s", truth)
	assert.Equal(t, []string{"n2"}, names(read), "the master's walsenders are n2's alone")
	assert.Equal(t, hasql.RoleSyncReplica, statusAt(m, n2).Role, "n2")
	assert.NotEqual(t, hasql.RoleSyncReplica, statusAt(m, n3).Role, "n3 cascades, its replay paused")
	served := map[string]int{}
	for range 20 {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := m.AcquireReplica(actx, hasql.SyncOnly())
		acancel()
		if err != nil {
			served["error"]++
			continue
		}
		served[nodeOf(c, conn)]++
		conn.Release()
	}
	t.Logf("SyncOnly reads served by: %v", served)
	assert.Zero(t, served["n3"], "SyncOnly reads served by n3, which cascades with its replay paused")
}
