package checker

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/testcluster"
)

func TestParseWalsenders(t *testing.T) {
	reps, pids, err := parseWalsenders("101|streaming|sync|0/3000148|0/3000148|0/3000060|512;102|catchup||1/A|||")
	require.NoError(t, err)
	assert.Equal(t, []int32{101, 102}, pids)
	assert.Equal(t, []Replica{
		{State: "streaming", SyncState: "sync", SentLSN: 0x3000148, FlushLSN: 0x3000148, ReplayLSN: 0x3000060,
			ReplayLag: 512 * time.Microsecond, HasReplayLag: true},
		{State: "catchup", SentLSN: 0x1_0000000A},
	}, reps)

	for _, bad := range []string{
		"101|streaming|sync|0/1|0/1|0/1",         // a field short
		"x|streaming|sync|0/1|0/1|0/1|",          // pid
		"101|streaming|sync|zz|0/1|0/1|",         // LSN
		"101|streaming|sync|0/1|0/1|0/1|-1",      // negative lag
		"101|streaming|sync|0/1|0/1|0/1|soon",    // lag
		"101|streaming|sync|0/1|0/1|0/1|1|extra", // a field too many
	} {
		_, _, err := parseWalsenders(bad)
		assert.Error(t, err, bad)
	}
}

// TestAnotherServerBehindTheConnection: a connection that reaches another
// server than the one it remembered (a pooler whose target moved) drops
// what it remembered: the master's timeline is read from the server it
// reaches now.
func TestAnotherServerBehindTheConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	conn, err := pgx.Connect(ctx, c.Master().DSN())
	require.NoError(t, err)
	defer conn.Close(ctx)
	first, err := PostgreSQL().Check(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, uint32(1), first.Timeline)

	// What the connection would remember of another server, on another
	// timeline, started at another time.
	data := conn.PgConn().CustomData()
	data[serverIdentity] = server{systemID: 42, startTime: first.StartTime.Add(-time.Hour), clusterName: "other"}
	data[masterTimeline] = uint32(7)
	data[kindKey] = kindMaster

	got, err := PostgreSQL().Check(ctx, conn)
	require.NoError(t, err)
	assert.Equal(t, uint32(1), got.Timeline, "the timeline of the server reached now")
	assert.Equal(t, first.SystemID, got.SystemID)
	assert.True(t, first.StartTime.Equal(got.StartTime))
	assert.Equal(t, first.Name, got.Name)
	assert.Len(t, got.Replicas, 1)
}

// TestMasterWalsendersReadWhenTheyMayHaveChanged: a master's check reads
// its walsenders at the connection's first check, then reuses them
// (ReplicasCached) for sendersEvery-1 checks; ReadAll and a change of
// synchronous_standby_names have them read at once, the new sync state
// with them.
func TestMasterWalsendersReadWhenTheyMayHaveChanged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	syncName, asyncName := c.SyncReplicas()[0].Name(), ""
	for _, r := range c.Replicas() {
		if r.Name() != syncName {
			asyncName = r.Name()
		}
	}
	conn, err := pgx.Connect(ctx, c.Master().DSN())
	require.NoError(t, err)
	defer conn.Close(ctx)
	stateOf := func(res Result, name string) string {
		for _, r := range res.Replicas {
			if r.ApplicationName == name {
				return r.SyncState
			}
		}
		return "missing"
	}
	check := func(ctx context.Context) Result {
		t.Helper()
		res, err := PostgreSQL().Check(ctx, conn)
		require.NoError(t, err)
		require.False(t, res.InRecovery)
		return res
	}

	// The cluster streams before New returns: every walsender streams.
	first := check(ctx)
	require.False(t, first.ReplicasCached, "the connection's first check reads the walsenders")
	require.Len(t, first.Replicas, 2)
	require.Equal(t, "sync", stateOf(first, syncName))
	for i := 1; i < sendersEvery; i++ {
		res := check(ctx)
		require.True(t, res.ReplicasCached, "check %d after a read", i)
		require.Equal(t, first.Replicas, res.Replicas, "check %d reuses the read", i)
	}
	require.False(t, check(ctx).ReplicasCached, "read again every %d checks", sendersEvery)
	require.True(t, check(ctx).ReplicasCached)
	require.False(t, check(ReadAll(ctx)).ReplicasCached, "ReadAll reads them")
	require.True(t, check(ctx).ReplicasCached)

	// The other replica becomes the sync one: the next check reads the
	// walsenders, once the check's backend has the new setting.
	admin, err := pgx.Connect(ctx, c.Master().DirectDSN())
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 ("+asyncName+")'")
	require.NoError(t, err)
	_, err = admin.Exec(ctx, "SELECT pg_reload_conf()")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var v string
		return conn.QueryRow(ctx, "SELECT current_setting('synchronous_standby_names')").Scan(&v) == nil && v == "FIRST 1 ("+asyncName+")"
	}, time.Minute, 10*time.Millisecond)
	changed := check(ctx)
	require.False(t, changed.ReplicasCached, "the setting changed: the walsenders are read")
	// Not every walsender may have taken the reload yet: the next check
	// reads them again.
	changed = check(ctx)
	require.False(t, changed.ReplicasCached, "read again at the check after a change of the setting")
	// Each walsender takes its priority from the reload as the check's
	// backend does: a read may show the old state a moment.
	require.Eventually(t, func() bool {
		if stateOf(changed, asyncName) == "sync" {
			return true
		}
		if res, err := PostgreSQL().Check(ReadAll(ctx), conn); err == nil {
			changed = res
		}
		return false
	}, time.Minute, 5*time.Millisecond, "the new sync state never came")
	assert.NotEqual(t, "sync", stateOf(changed, syncName))
}

// TestWalsenderNamesFollowPids: what a master's check connection keeps of
// its walsenders' names holds the pids of its last read only, and a pid
// whose WAL sent went back since is named afresh: a pid that another
// walsender takes is never named after the one before.
func TestWalsenderNamesFollowPids(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	conn, err := pgx.Connect(ctx, c.Master().DSN())
	require.NoError(t, err)
	defer conn.Close(ctx)
	read := func() Result {
		t.Helper()
		var res Result
		require.Eventually(t, func() bool {
			var err error
			res, err = PostgreSQL().Check(ReadAll(ctx), conn)
			require.NoError(t, err)
			return len(res.Replicas) == 1 && res.Replicas[0].State == "streaming"
		}, 30*time.Second, 10*time.Millisecond, "the replica streams")
		require.False(t, res.ReplicasCached)
		return res
	}
	first := read()
	assert.Equal(t, "n2", first.Replicas[0].ApplicationName)
	names := conn.PgConn().CustomData()[walsenderNames].(map[int32]walsender)
	require.Len(t, names, 1)
	var pid int32
	for p := range names {
		pid = p
	}

	// A walsender gone since: its pid is forgotten at the next read, and
	// the others are named afresh (one of them may have its pid now).
	names[pid+100000] = walsender{app: "gone", addr: "192.0.2.1"}
	names[pid] = walsender{app: "before", addr: "192.0.2.1"}
	read()
	names = conn.PgConn().CustomData()[walsenderNames].(map[int32]walsender)
	assert.NotContains(t, names, pid+100000, "a pid the read does not list")
	assert.Equal(t, "n2", names[pid].app, "a walsender left: the others named afresh")

	// Nothing says the pid changed hands: the name stays, unless the
	// Manager asks for the names (ReadNames).
	names[pid] = walsender{app: "before", addr: "192.0.2.1"}
	assert.Equal(t, "before", read().Replicas[0].ApplicationName)
	res, err := PostgreSQL().Check(ReadNames(ReadAll(ctx)), conn)
	require.NoError(t, err)
	require.Len(t, res.Replicas, 1)
	assert.Equal(t, "n2", res.Replicas[0].ApplicationName, "named afresh when asked")
	names = conn.PgConn().CustomData()[walsenderNames].(map[int32]walsender)

	// Another walsender on the pid, further along than the new one.
	names[pid] = walsender{app: "before", addr: "192.0.2.1", sent: LSN(1) << 60}
	again := read()
	assert.Equal(t, "n2", again.Replicas[0].ApplicationName, "a pid whose WAL sent went back is named afresh")
	names = conn.PgConn().CustomData()[walsenderNames].(map[int32]walsender)
	assert.Equal(t, "n2", names[pid].app)
	assert.Equal(t, again.Replicas[0].SentLSN, names[pid].sent)
}
