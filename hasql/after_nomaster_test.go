package hasql_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// Through PgBouncer in transaction mode
// (simple protocol, as docs/pgbouncer.md asks), a token carried to another
// Manager reads its write from the master while the replicas' replay is
// paused; ExecToken's open transaction is rolled back behind PgBouncer;
// after a failover that loses a write, a read after its token fails with
// ErrWriteLost (the history file read through PgBouncer), and one after a
// token that survived reads its row.
func TestTokensThroughPgBouncerTransaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 0, PgBouncer: testcluster.PgBouncerTransaction})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	dsn := withParams(c.DSN(), "hasql_check_interval", "100ms", "default_query_exec_mode", "simple_protocol")
	writer := newManager(t, ctx, dsn)
	reader := newManager(t, ctx, dsn)
	require.NoError(t, writer.WaitReady(ctx, 1, 2))
	require.NoError(t, reader.WaitReady(ctx, 1, 2))
	_, err := writer.Master().Exec(ctx, "CREATE TABLE notes (id int PRIMARY KEY)")
	require.NoError(t, err)
	created, err := writer.Token(ctx)
	require.NoError(t, err)
	replayedTo(t, reader, created.LSN)

	_, tok, err := writer.Master().ExecToken(ctx, "BEGIN; INSERT INTO notes VALUES (99)")
	require.Error(t, err)
	require.True(t, tok.IsZero())
	var k int
	require.Eventually(t, func() bool {
		return writer.Master().QueryRow(ctx, "SELECT count(*) FROM notes WHERE id = 99").Scan(&k) == nil && k == 0
	}, 10*time.Second, 10*time.Millisecond)

	for _, n := range c.Replicas() {
		require.NoError(t, n.PauseReplay(ctx))
	}
	_, kept, err := writer.Master().ExecToken(ctx, "INSERT INTO notes VALUES (1)")
	require.NoError(t, err)
	parsed, err := hasql.ParseToken(kept.String())
	require.NoError(t, err)
	found, onReplica, err := readAfter(ctx, reader, parsed, "notes", 1)
	require.NoError(t, err)
	assert.Equal(t, 1, found)
	assert.False(t, onReplica)
	for _, n := range c.Replicas() {
		require.NoError(t, n.ResumeReplay(ctx))
	}
	replayedTo(t, reader, kept.LSN)

	stopReceiver(t, ctx, n2)
	_, lost, err := writer.Master().ExecToken(ctx, "INSERT INTO notes VALUES (2)")
	require.NoError(t, err)
	require.NoError(t, n1.Kill())
	require.NoError(t, c.Failover(ctx, n2))
	waitRole(t, reader, "n2", hasql.RoleMaster)
	for name, mm := range map[string]*hasql.Manager{"reader": reader, "started after": newManager(t, ctx, dsn)} {
		require.NoError(t, mm.WaitReady(ctx, 1, 0))
		found, _, err := readAfter(ctx, mm, kept, "notes", 1)
		require.NoError(t, err, name)
		assert.Equal(t, 1, found, name)
		short, cancelShort := context.WithTimeout(ctx, 10*time.Second)
		found, _, err = readAfter(short, mm, lost, "notes", 2)
		cancelShort()
		require.ErrorIs(t, err, hasql.ErrWriteLost, "%s: found %d", name, found)
	}
}

// replayedOn waits until n itself reports a replay position at or past lsn.
func replayedOn(t *testing.T, ctx context.Context, n *testcluster.Node, lsn hasql.LSN) {
	t.Helper()
	require.Eventually(t, func() bool {
		conn, err := n.Conn(ctx)
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		var ok bool
		return conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn.String()).Scan(&ok) == nil && ok
	}, 30*time.Second, 10*time.Millisecond, "%s never replayed %s", n, lsn)
}

// A replica on a branch the master does not have (it replayed past the
// point where the master's timeline forked off) serves no read after a
// token, with a master and without one. With a check user without
// pg_monitor (docs/roles.md), once the master is gone, the wrong-branch
// replica keeps the replica role it had, and a read after a token of the
// (now missing) master's timeline was served by it: numerically past the
// token's position, without the write.
//
// n1 master; n4's walreceiver stopped first, then n2's (n4 <= n2); a large
// write on n1 that n3 replays (n3 goes past the fork). n1 killed, n2
// promoted (timeline 2), n3 and n4 pointed at n2 (n4 follows, n3 cannot).
// A write on n2 gives the token. n2 is then killed: a read after the token
// must be served by n4 (it has the write) or wait, never by n3.
func TestAfterWithoutMasterSkipsWrongBranchReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 3, SyncReplicas: 0})
	n1, n2, n3, n4 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2], c.Nodes()[3]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 3))
	createNotes(t, ctx, m, n1)
	rm := readerManager(t, ctx, c, 3)
	ci := conninfoOf(t, ctx, n3)

	stopReceiver(t, ctx, n4)
	_, mid, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (1)")
	require.NoError(t, err)
	replayedOn(t, ctx, n2, mid.LSN)
	stopReceiver(t, ctx, n2)
	_, ahead, err := m.Master().ExecToken(ctx, "INSERT INTO notes SELECT g FROM generate_series(100, 3000) g")
	require.NoError(t, err)
	replayedOn(t, ctx, n3, ahead.LSN)

	require.NoError(t, n1.Kill())
	require.NoError(t, n2.Promote(ctx))
	waitRole(t, m, "n2", hasql.RoleMaster)
	waitRole(t, rm, "n2", hasql.RoleMaster)
	for _, n := range []*testcluster.Node{n3, n4} {
		// n4's own was emptied: n3's, under n4's name.
		streamFrom(t, ctx, n, strings.Replace(ci, "application_name=n3", "application_name="+n.Name(), 1), n1, n2)
	}

	_, tok, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (7)")
	require.NoError(t, err)
	require.EqualValues(t, 2, tok.Timeline)
	require.Less(t, tok.LSN, ahead.LSN, "n3 is numerically past the new master's token")
	_, _, err = m.Master().ExecToken(ctx, "INSERT INTO notes SELECT g FROM generate_series(10000, 16000) g")
	require.NoError(t, err)
	replayedOn(t, ctx, n4, tok.LSN)
	execOn(t, ctx, n2, "CHECKPOINT")
	require.Eventually(t, func() bool {
		execOn(t, ctx, n4, "CHECKPOINT") // a restartpoint: n4's control data shows timeline 2
		return statusOf(rm, "n4").Timeline == 2 && statusOf(rm, "n4").Role.IsReplica()
	}, 30*time.Second, 200*time.Millisecond, "n4 in the restricted view: %+v", statusOf(rm, "n4"))
	t.Logf("restricted view before n2 goes: n3 %s tl %d lsn %s (detached %q); n4 %s tl %d",
		statusOf(rm, "n3").Role, statusOf(rm, "n3").Timeline, statusOf(rm, "n3").LSN, statusOf(rm, "n3").Detached,
		statusOf(rm, "n4").Role, statusOf(rm, "n4").Timeline)

	require.NoError(t, n2.Kill())
	require.Eventually(t, func() bool { return rm.Stat().Master == "" }, 30*time.Second, 5*time.Millisecond)
	t.Logf("restricted view without a master: n3 %s tl %d lsn %s (detached %q); n4 %s tl %d",
		statusOf(rm, "n3").Role, statusOf(rm, "n3").Timeline, statusOf(rm, "n3").LSN, statusOf(rm, "n3").Detached,
		statusOf(rm, "n4").Role, statusOf(rm, "n4").Timeline)
	t.Logf("pg_monitor view without a master: n3 %s tl %d (detached %q); n4 %s tl %d",
		statusOf(m, "n3").Role, statusOf(m, "n3").Timeline, statusOf(m, "n3").Detached, statusOf(m, "n4").Role, statusOf(m, "n4").Timeline)
	managers := map[string]*hasql.Manager{"restricted": rm, "pg_monitor": m}
	{ // Managers started after the master is gone (these hold up)
		managers["fresh pg_monitor"] = newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
		managers["fresh restricted"] = newManager(t, ctx, withParams(strings.Replace(c.DSN(), "postgres:pgxha@", "reader:r@", 1), "hasql_check_interval", "100ms"))
		for name, mm := range managers {
			require.Eventually(t, func() bool {
				return !statusOf(mm, "n3").LastCheck.IsZero() && !statusOf(mm, "n4").LastCheck.IsZero() && statusOf(mm, "n4").Role.IsReplica()
			}, 30*time.Second, 10*time.Millisecond, "%s: %+v", name, mm.Nodes())
			t.Logf("%s: n3 %s tl %d (detached %q); n4 %s", name, statusOf(mm, "n3").Role, statusOf(mm, "n3").Timeline, statusOf(mm, "n3").Detached, statusOf(mm, "n4").Role)
		}
	}
	missed := map[string]int{}
	for name, mm := range managers {
		for range 30 {
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			found, onReplica, err := readAfter(rctx, mm, tok, "notes", 7)
			rcancel()
			if err == nil && found == 0 {
				missed[name]++
			}
			if err != nil || found == 0 {
				t.Logf("%s: found=%d onReplica=%v err=%v", name, found, onReplica, err)
			}
		}
	}
	t.Logf("reads served without the write, by Manager: %v", missed)
	for name, k := range missed {
		assert.Zero(t, k, "%s: reads after %s served by n3, without the write; n3 in its view: %+v", name, tok, statusOf(managers[name], "n3"))
	}
}

// The same on an ordinary failover (no wrong branch), for a check user with
// pg_monitor too. A replica's timeline is read from its
// walreceiver, or, when it has none (or the user may not see it), from its
// control data, which lags what it replays. n1's write W is lost (n2, its
// walreceiver stopped, is promoted); n3 follows n2 onto timeline 2 and
// replays past W's position there. n2 then dies (a second failure after
// the first). Both Managers saw n2 master on timeline 2, yet with no master
// After resolved against the live replicas' timelines only: n3's control
// data says 1, so the token of the lost write was taken for one of the
// cluster's timeline and n3 (numerically past it, on timeline 2) served the
// read without the write, where ErrWriteLost is due; a token of timeline
// 2 failed with ErrTokenAhead "the newest the Manager has seen is 1" (it
// saw 2). The settings only keep n3's control data from catching up by
// chance (the test failed without them too).
func TestAfterWithoutMasterLostWriteIsReported(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 0,
		Settings: map[string]string{"bgwriter_lru_maxpages": "0", "checkpoint_timeout": "1h"}})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	createNotes(t, ctx, m, n1)
	rm := readerManager(t, ctx, c, 2)
	ci := conninfoOf(t, ctx, n3)

	stopReceiver(t, ctx, n3)
	_, mid, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (1)")
	require.NoError(t, err)
	replayedOn(t, ctx, n2, mid.LSN)
	stopReceiver(t, ctx, n2)
	_, lost, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (2)")
	require.NoError(t, err, "acknowledged by n1 alone")

	require.NoError(t, n1.Kill())
	require.NoError(t, n2.Promote(ctx))
	waitRole(t, m, "n2", hasql.RoleMaster)
	waitRole(t, rm, "n2", hasql.RoleMaster)
	streamFrom(t, ctx, n3, ci, n1, n2)
	_, past, err := m.Master().ExecToken(ctx, "INSERT INTO notes SELECT g FROM generate_series(100, 3000) g")
	require.NoError(t, err)
	require.EqualValues(t, 2, past.Timeline)
	require.Greater(t, past.LSN, lost.LSN, "timeline 2 is numerically past the lost write")
	replayedOn(t, ctx, n3, past.LSN)
	require.Eventually(t, func() bool { return roles(rm)["n3"].IsReplica() && statusOf(rm, "n3").LSN >= past.LSN },
		30*time.Second, 5*time.Millisecond, "n3 in the restricted view: %+v", statusOf(rm, "n3"))
	t.Logf("restricted view before n2 goes: n3 %s tl %d lsn %s", statusOf(rm, "n3").Role, statusOf(rm, "n3").Timeline, statusOf(rm, "n3").LSN)

	require.NoError(t, n2.Kill())
	require.Eventually(t, func() bool { return rm.Stat().Master == "" && m.Stat().Master == "" }, 30*time.Second, 5*time.Millisecond)
	t.Logf("restricted view without a master: n3 %s tl %d lsn %s", statusOf(rm, "n3").Role, statusOf(rm, "n3").Timeline, statusOf(rm, "n3").LSN)
	for _, name := range []string{"restricted", "pg_monitor"} {
		mm := map[string]*hasql.Manager{"pg_monitor": m, "restricted": rm}[name]
		if name == "pg_monitor" {
			// Once n3's walreceiver is gone (it has no master to stream
			// from), pg_monitor shows no received timeline either.
			if !assert.Eventually(t, func() bool { return statusOf(m, "n3").Timeline == 1 }, 30*time.Second, 10*time.Millisecond) {
				t.Logf("pg_monitor view of n3: %+v", statusOf(m, "n3"))
			}
			t.Logf("pg_monitor view without a master: n3 %s tl %d lsn %s", statusOf(m, "n3").Role, statusOf(m, "n3").Timeline, statusOf(m, "n3").LSN)
		}
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		found, onReplica, err := readAfter(rctx, mm, lost, "notes", 2)
		rcancel()
		t.Logf("%s: read after the lost write's token %s: found=%d onReplica=%v err=%v", name, lost, found, onReplica, err)
		assert.False(t, err == nil && found == 0, "%s: the read after the lost write's token was served without it, no ErrWriteLost", name)

		if name == "restricted" {
			require.ErrorIs(t, err, hasql.ErrForkUnknown, "%s: may not read the history file", name)
		} else {
			require.ErrorIs(t, err, hasql.ErrWriteLost, name)
		}

		// And the token of a write of timeline 2, which n3 has replayed:
		// n3, showing timeline 1, cannot be told from a replica on the
		// lost branch, so the read waits for a node that shows timeline 2
		// (docs: without a master, "served by a replica that has the
		// write or waits for one"); it never reads the timeline as 1.
		rctx, rcancel = context.WithTimeout(ctx, 3*time.Second)
		found, onReplica, err = readAfter(rctx, mm, past, "notes", 100)
		rcancel()
		t.Logf("%s: read after timeline 2's token %s: found=%d onReplica=%v err=%v", name, past, found, onReplica, err)
		assert.False(t, err == nil && found == 0, "%s: served without the write", name)
		assert.NotErrorIs(t, err, hasql.ErrTokenAhead, "%s: the Manager saw timeline 2", name)
		var ne *hasql.NoNodeError
		if assert.ErrorAs(t, err, &ne, name) {
			assert.Contains(t, ne.Error(), "replica: shows timeline 1, older than the cluster's", "%s: why n3 is not taken", name)
		}
	}
}

// A token of the old timeline, taken before a failover, of a write every
// node had (long before the failover, so at or before the point where
// timeline 1 ended): after the failover to n2 (timeline 2, n3 following
// it) and a second failure (n2 dies), n3 is the only node up and surely
// has the write: whatever branch it is on, timeline 1 up to its end is in
// its history and it replayed past the token. The cluster's timeline is 2
// (remembered of n2) and n3 shows timeline 1 (control data, no
// walreceiver): taken for "behind the timeline", it served no such read
// and every user whose cookie held a token from before the failover was
// refused reads the replica can serve. A replica on the cut-off branch has
// a write from before the fork too.
func TestAfterOldTokenWithoutMasterServedByAReplicaThatHasIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 0,
		Settings: map[string]string{"bgwriter_lru_maxpages": "0", "checkpoint_timeout": "1h"}})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	execOn(t, ctx, n1, "CREATE TABLE notes (id int PRIMARY KEY)")
	_, old, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (1)")
	require.NoError(t, err)
	require.EqualValues(t, 1, old.Timeline)
	replayedOn(t, ctx, n2, old.LSN)
	replayedOn(t, ctx, n3, old.LSN)

	ci := conninfoOf(t, ctx, n3)

	require.NoError(t, n1.Kill())
	require.NoError(t, n2.Promote(ctx))
	waitRole(t, m, "n2", hasql.RoleMaster)
	streamFrom(t, ctx, n3, ci, n1, n2)
	_, past, err := m.Master().ExecToken(ctx, "INSERT INTO notes SELECT g FROM generate_series(100, 3000) g")
	require.NoError(t, err)
	require.EqualValues(t, 2, past.Timeline)
	replayedOn(t, ctx, n3, past.LSN)
	require.Eventually(t, func() bool { st := statusOf(m, "n3"); return st.Role.IsReplica() && st.Timeline == 2 },
		30*time.Second, 5*time.Millisecond, "n3 follows n2 on timeline 2: %+v", statusOf(m, "n3"))

	// Before n2 goes, the read after the old token is served by n3.
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	found, onReplica, err := readAfter(rctx, m, old, "notes", 1)
	rcancel()
	require.NoError(t, err)
	t.Logf("with n2 master: found=%d onReplica=%v", found, onReplica)

	require.NoError(t, n2.Kill())
	require.Eventually(t, func() bool {
		return m.Stat().Master == "" && statusOf(m, "n3").Timeline == 1 && statusOf(m, "n3").Role.IsReplica()
	},
		30*time.Second, 5*time.Millisecond, "no master; n3 shows its control data's timeline 1: %+v", statusOf(m, "n3"))
	t.Logf("without a master: n3 %s tl %d lsn %s (token %s)", statusOf(m, "n3").Role, statusOf(m, "n3").Timeline, statusOf(m, "n3").LSN, old)

	rctx, rcancel = context.WithTimeout(ctx, 5*time.Second)
	found, onReplica, err = readAfter(rctx, m, old, "notes", 1)
	rcancel()
	t.Logf("read after the old token without a master: found=%d onReplica=%v err=%v", found, onReplica, err)
	require.NoError(t, err, "n3, up and past the token on every branch it can be on, has the write")
	require.Equal(t, 1, found)
}
