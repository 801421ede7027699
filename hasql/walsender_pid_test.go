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

// TestReusedWalsenderPid: the master's check connection names walsenders
// by pid, and asks their names only when a pid it has not named appears.
// n3 moves to cascade from n2, so that its walsender on the master (pid P)
// exits; later n2's walsender restarts and the kernel gives it P again
// (ns_last_pid makes now what a pid wrap does in time). A read that no
// longer lists P forgets its name: n2's row is named n2 again, not n3,
// which cascades with its replay paused and must neither be called sync
// nor pass a lag limit. (Before, P kept its name for good: n3 was sync with
// n2's positions and served SyncOnly and MaxLag reads, and n2 was
// detached.)
func TestReusedWalsenderPid(t *testing.T) {
	last, err := os.ReadFile("/proc/sys/kernel/ns_last_pid")
	if err == nil {
		err = os.WriteFile("/proc/sys/kernel/ns_last_pid", last, 0) // as it is
	}
	if err != nil {
		// Only root steers the kernel's pids; the test needs it to make
		// a walsender take a given pid.
		t.Skipf("cannot steer pid allocation (root on Linux only): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
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
	// masterRead waits for a check of the master that read its walsenders
	// and began after after, and returns what it read.
	masterRead := func(what string, after time.Time) traceEntry {
		var read traceEntry
		waitUntil(t, ctx, what, func() bool {
			for _, e := range checksIn(trace.String()) {
				if !e.Result.InRecovery && !e.Result.ReplicasCached && e.Began.After(after) {
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

	// n3 will cascade from n2, by its own name.
	host2, port2, _ := strings.Cut(n2.DirectAddr(), ":")
	var kept []string
	for _, kv := range strings.Fields(conninfo3) {
		if !strings.HasPrefix(kv, "host=") && !strings.HasPrefix(kv, "port=") {
			kept = append(kept, kv) // user, password, application_name=n3, ...
		}
	}
	cascade := "host=" + host2 + " port=" + port2 + " " + strings.Join(kept, " ")
	reused := false
	for attempt := 1; attempt <= 30 && !reused; attempt++ {
		// n3 streams from the master, and a check of the master named its
		// walsender.
		waitUntil(t, ctx, "n3 streams from the master", func() bool { return senderPid("n3") != 0 })
		p3 := senderPid("n3")
		masterRead("a master check that names n3's walsender", time.Now())
		// n3 moves to n2: its walsender on the master exits. A read of the
		// master's walsenders that no longer lists it follows (n3's
		// upstream changed).
		setConninfo(n3c, cascade)
		waitUntil(t, ctx, "n3's walsender on the master gone", func() bool { return gone("n3") })
		since := time.Now()
		waitUntil(t, ctx, "a master check that read the walsenders without n3", func() bool {
			e := masterRead("a master read", since)
			return !slices.Contains(names(e), "n3")
		})
		// n2's walsender restarts, with pid p3 if nothing else forks first.
		setConninfo(n2c, "")
		waitUntil(t, ctx, "n2's walsender gone", func() bool { return gone("n2") })
		require.NoError(t, os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(p3-2)), 0))
		setConninfo(n2c, conninfo2) // n2's walreceiver takes p3-1, its walsender p3
		waitUntil(t, ctx, "n2 streams again", func() bool { return senderPid("n2") != 0 })
		p2 := senderPid("n2")
		t.Logf("attempt %d: n3's walsender was pid %d, n2's is now pid %d", attempt, p3, p2)
		if reused = p2 == p3; !reused {
			setConninfo(n3c, conninfo3)
		}
	}
	require.True(t, reused, "no attempt got the pid reused")

	// n3's replay stops: it falls behind while the master writes.
	_, err = n3c.Exec(ctx, "SELECT pg_wal_replay_pause()")
	require.NoError(t, err)
	execOn(t, ctx, n1, "INSERT INTO marks SELECT 1000 FROM generate_series(1, 200000)")
	var behind int64
	require.NoError(t, mc.QueryRow(ctx, "SELECT pg_current_wal_lsn() - $1::pg_lsn", func() string {
		var l string
		require.NoError(t, n3c.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text").Scan(&l))
		return l
	}()).Scan(&behind))
	require.Greater(t, behind, int64(1<<20), "n3 is behind")

	// Once a check of the master read its walsenders with n2's on pid p3
	// and the rows written, and every replica was checked after it, the
	// view holds what the servers say.
	read := masterRead("a master read after the write", time.Now())
	t.Logf("the master's walsenders: %+v", read.Result.Replicas)
	waitUntil(t, ctx, "every replica checked after that read", func() bool {
		for _, st := range m.Nodes() {
			if !st.LastCheck.After(read.At) {
				return false
			}
		}
		return true
	})
	assert.Equal(t, []string{"n2"}, names(read), "the master's walsenders are n2's alone")
	for _, st := range m.Nodes() {
		t.Logf("%s: role %s, lag %d bytes %s known=%v, detached %q", st.Name, st.Role, st.LagBytes, st.Lag, st.LagKnown, st.Detached)
	}
	assert.Equal(t, hasql.RoleSyncReplica, statusAt(m, n2).Role, "n2")
	assert.NotEqual(t, hasql.RoleSyncReplica, statusAt(m, n3).Role, "n3 cascades, its replay paused")
	for what, opt := range map[string]hasql.ReplicaOption{"SyncOnly": hasql.SyncOnly(), "MaxLag(1 MiB)": hasql.MaxLag(1<<20, 0)} {
		for range 20 {
			actx, acancel := context.WithTimeout(ctx, 5*time.Second)
			conn, err := m.AcquireReplica(actx, opt)
			acancel()
			if err != nil {
				continue
			}
			name := nodeOf(c, conn)
			conn.Release()
			require.NotEqual(t, "n3", name, "a read with %s was served by n3, %d bytes behind", what, behind)
		}
	}
}
