package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// A replica with no walreceiver shows its control data's timeline, which
// lags what it replays; the newest history file in its pg_wal proves a
// timeline exists all the same: the writable node on an older one is
// stale. A replica that streams says what it follows: a history file left
// from a branch it was rewound off proves nothing then.
func TestHistoryTimelineProvesANewerTimeline(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	c.CheckOK(1, master(1, 5000, "n2"), at(1), at(2), "10.0.0.1")
	r := replica("n2", 1, 1, 1000)
	r.HistoryTimeline = 2 // left over: it streams timeline 1
	c.CheckOK(2, r, at(3), at(4), "10.0.0.2")
	c.TakeReady()
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("a history file of a streaming replica made n1 stale: %+v", e)
	}
	if x := c.Node(2); !x.Role.IsReplica() {
		t.Fatalf("n2: role %s (%s)", x.Role, x.Detached)
	}

	r.ReceiveTimeline = 0 // its upstream is gone: control data shows 1
	c.CheckOK(2, r, at(5), at(6), "10.0.0.2")
	c.CheckOK(1, master(1, 6000, "n2"), at(7), at(8), "10.0.0.1")
	c.TakeReady()
	if e := c.Elected(); e.Master != nil || len(e.Stale) == 0 || e.Timeline != 2 {
		t.Fatalf("n2 holds timeline 2's history with no walreceiver: n1, on timeline 1, must be stale: %+v", e)
	}
}

// A replica left behind on timeline 1 by a failover (it had received
// async WAL past the point where the new master forked timeline 2 off)
// holds timeline 2's history file all the same: its walreceiver fetches
// the history files of every timeline up to its upstream's when it
// connects, "even when we're not interested in that timeline"
// (walreceiver.c, WalRcvFetchTimeLineHistoryFiles), and the startup
// process then finds that "new timeline 2 forked off current database
// system timeline 1 before current recovery point" and stays on 1. Once
// the new master dies too, the Manager started now sees: n3, a replica
// that followed timeline 2 (its control data shows 2), and n4, left
// behind: control data on 1, history file 2, no walreceiver. Before
// be22834 n4 was detached (timeline 1 below the cluster's 2); with
// max(Timeline, HistoryTimeline) it serves reads of a branch the cluster
// gave up (the writes the failover lost, none of timeline 2's).
func TestLeftBehindReplicaWithANewerHistoryFileServesNoRead(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(4))
	refused := errors.New("connection refused")
	c.CheckFailed(1, refused, false, at(1)) // the old master, fenced
	c.CheckFailed(2, refused, false, at(1)) // the new master (timeline 2), dead
	r3 := replica("n3", 2, 0, 5000)         // followed timeline 2; its upstream is gone
	r3.HistoryTimeline = 2
	c.CheckOK(3, r3, at(2), at(3), "10.0.0.3")
	r4 := replica("n4", 1, 0, 6000) // left behind on timeline 1, past the fork point
	r4.StartTime = t0.Add(-time.Hour)
	r4.HistoryTimeline = 2 // fetched by its walreceiver from the new master before it died
	c.CheckOK(4, r4, at(2), at(4), "10.0.0.4")
	c.TakeReady()
	if e := c.Elected(); e.Master != nil || e.Timeline != 2 {
		t.Fatalf("election: %+v", e)
	}
	if x := c.Node(3); !x.Role.IsReplica() {
		t.Fatalf("n3, on timeline 2: role %s (%s)", x.Role, x.Detached)
	}
	if x := c.Node(4); x.Role.IsReplica() {
		t.Fatalf("n4, whose control data shows timeline 1 while the cluster is on 2, serves reads (role %s) on the strength of a history file every left-behind replica holds", x.Role)
	}
}

// A replica whose walreceiver once reached a server of another branch
// with a higher timeline number (its primary_conninfo names a DNS name
// that, for a moment, pointed to another server: a stale record, a
// restored backup promoted for a test; nothing in the set, nothing
// vouched) fetched that timeline's history file and could not follow it.
// For as long as its walreceiver is down, it shows HistoryTimeline 3; the
// core takes that into the node's seenTL, which nothing lowers again
// (not the replica streaming timeline 2 from the master again, listed
// by it): the master stays stale for good, although the server that made
// timeline 3 was never in the set, and the faults have ended.
func TestHistoryFileOfAnotherBranchDroppedOnceTheReplicaStreams(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	c.CheckOK(1, master(2, 5000, "n2"), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 2, 2, 5000), at(1), at(3), "10.0.0.2")
	c.TakeReady()
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("start: %+v", e)
	}
	// The name n2 streams from points elsewhere for a moment: its
	// walreceiver fetches 00000003.history, cannot follow, and retries.
	r := replica("n2", 2, 0, 5000)
	r.HistoryTimeline = 3
	c.CheckOK(2, r, at(10), at(11), "10.0.0.2")
	// The name points back: n2 streams timeline 2 from n1 again, n1
	// lists it; many rounds of checks, nothing else happens.
	for i := 0; i < 50; i++ {
		ms := 100 + 500*i
		c.CheckOK(1, master(2, checker.LSN(5000+100*i), "n2"), at(ms), at(ms+1), "10.0.0.1")
		c.CheckOK(2, replica("n2", 2, 2, checker.LSN(5000+100*i)), at(ms+2), at(ms+3), "10.0.0.2")
	}
	c.TakeReady()
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("n2 streams timeline 2 from n1 and is listed by it, nothing in the set shows timeline 3, yet 25 s after the only sign of it: %+v", e)
	}
}

// be22834's own comment: "a replica rewound or repointed onto an older
// branch keeps the file", which is why HistoryTimeline counts only while
// no walreceiver runs. But one check with the walreceiver down is enough,
// and what it proved is never dropped: the master restarts (its replica's
// walreceiver stops until it is back), and once it is back, writable on
// the timeline it always had, with the replica streaming from it and
// listed, it is stale for good.
func TestLeftoverHistoryFileAfterAMasterRestart(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	r := replica("n2", 1, 1, 1000)
	r.HistoryTimeline = 2 // left over (not read while it streams; kept in pg_wal)
	c.CheckOK(1, master(1, 1000, "n2"), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, r, at(3), at(4), "10.0.0.2")
	c.TakeReady()
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("start: %+v", e)
	}
	// n1 restarts: refused for a moment; n2's walreceiver is down meanwhile.
	c.CheckFailed(1, errors.New("connection refused"), false, at(10))
	down := r
	down.ReceiveTimeline = 0
	c.CheckOK(2, down, at(11), at(12), "10.0.0.2")
	// n1 is back (a new start time), n2 streams from it again.
	for i := 0; i < 50; i++ {
		ms := 100 + 500*i
		m := master(1, checker.LSN(1000+100*i), "n2")
		m.StartTime = t0.Add(time.Hour)
		c.CheckOK(1, m, at(ms), at(ms+1), "10.0.0.1")
		c.CheckOK(2, replica("n2", 1, 1, checker.LSN(1000+100*i)), at(ms+2), at(ms+3), "10.0.0.2")
	}
	c.TakeReady()
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("after a restart of n1, 25 s of n2 streaming timeline 1 from it: %+v", e)
	}
}

// A replica whose history file made the master stale leaves the set: the
// proof goes with it, the master takes writes again.
func TestHistoryProofLeavesWithItsNode(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	c.CheckOK(1, master(1, 5000, "n2"), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 5000), at(1), at(3), "10.0.0.2")
	r := replica("n3", 1, 0, 4000)
	r.StartTime = t0.Add(-time.Hour)
	r.HistoryTimeline = 2
	c.CheckOK(3, r, at(1), at(4), "10.0.0.3")
	c.CheckOK(1, master(1, 5100, "n2"), at(5), at(6), "10.0.0.1")
	if e := c.Elected(); e.Master != nil || e.Timeline != 2 {
		t.Fatalf("n3 holds timeline 2's history: %+v", e)
	}
	c.SetMembers(at(10), members(2))
	c.CheckOK(1, master(1, 5200, "n2"), at(11), at(12), "10.0.0.1")
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 || e.Timeline != 1 {
		t.Fatalf("n3 left: %+v", e)
	}
}

// A server nothing vouches for (discovered, not named) that claims a
// history file of timeline 9 with no walreceiver raises nothing, and is
// not served as a first-seen replica.
func TestUnvouchedHistoryTimelineIgnored(t *testing.T) {
	c := New(Config{})
	mbs := members(3)
	mbs[2].Trusted = false
	c.SetMembers(at(0), mbs)
	c.CheckOK(1, master(1, 5000, "n2"), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 5000), at(1), at(3), "10.0.0.2")
	r := replica("n3", 1, 0, 4000)
	r.StartTime = t0.Add(-time.Hour)
	r.HistoryTimeline = 9
	c.CheckOK(3, r, at(1), at(4), "10.0.0.3")
	c.CheckOK(1, master(1, 5100, "n2"), at(5), at(6), "10.0.0.1")
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 || e.Timeline != 1 {
		t.Fatalf("an unvouched node's history file counted: %+v", e)
	}
	// With no master: still not served.
	c.CheckFailed(1, errors.New("connection refused"), false, at(7))
	c.CheckOK(3, r, at(8), at(9), "10.0.0.3")
	if x := c.Node(3); x.Role.IsReplica() {
		t.Fatalf("unvouched n3 serves reads with no master: %s", x.Role)
	}
	if e := c.Elected(); e.Timeline != 1 {
		t.Fatalf("timeline %d", e.Timeline)
	}
}
