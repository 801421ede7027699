package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// The history-file proof and the timelines seen before the cluster is
// learned: each of these failed on the core before histLeftOver and the
// records kept by system identifier.

// A name that moves leaves a history file's proof on a node that now
// reaches the master: the proof is dropped only when the node "streams an
// older timeline", which a writable server never does.
//
// The leftover file is that of docs/roles.md's abandoned promotion (n2
// holds 00000002.history, fetched from a server promoted and then
// abandoned, out of the set; TestAbandonedPromotionHistoryFileDoesNotBlockWrites
// promises it does not block writes once n2 streams again). Node 3 is a
// name the user put in the connection string (a VIP / DNS name usually on
// n1). While n1 restarts the name points at n2 (a VIP failing over to the
// surviving server, a stale DNS record), and n2's walreceiver is down: node
// 3 shows HistoryTimeline 2. n1 comes back, the name points back at n1,
// n2 streams timeline 1 from n1 again and is listed: n2's own histTL is
// dropped (everyone answers), node 3's never is: node 3 is writable now.
// n1 stays stale for good, while every node answers and no server of the
// set or outside it is on timeline 2.
func TestMovedNameDropsALeftoverHistoryProof(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	m := master(1, 1000, "n2")
	n2 := replica("n2", 1, 1, 1000)
	n2.UpstreamHost, n2.UpstreamPort = "10.0.0.1", 5432
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, n2, at(3), at(4), "10.0.0.2")
	c.CheckOK(3, m, at(5), at(6), "10.0.0.1") // the name reaches n1
	c.TakeReady()
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("start: %+v", e)
	}
	// n1 restarts: refused at both addresses for a moment; then the name
	// reaches n2, whose walreceiver is down (its upstream restarts).
	refused := errors.New("connection refused")
	c.CheckFailed(1, refused, false, at(100))
	c.CheckFailed(3, refused, false, at(101))
	down := n2
	down.ReceiveTimeline, down.UpstreamHost, down.UpstreamPort = 0, "", 0
	down.HistoryTimeline = 2 // the abandoned promotion's leftover file
	c.CheckOK(2, down, at(110), at(111), "10.0.0.2")
	c.CheckOK(3, down, at(112), at(113), "10.0.0.2")
	// n1 back (new start time), the name back on n1, n2 streams from it.
	back := t0.Add(time.Hour)
	for i := 0; i < 50; i++ {
		ms := 1000 + 500*i
		mm := master(1, checker.LSN(1100+100*i), "n2")
		mm.StartTime = back
		r := replica("n2", 1, 1, checker.LSN(1100+100*i))
		r.UpstreamHost, r.UpstreamPort = "10.0.0.1", 5432
		c.CheckOK(1, mm, at(ms), at(ms+1), "10.0.0.1")
		c.CheckOK(2, r, at(ms+2), at(ms+3), "10.0.0.2")
		c.CheckOK(3, mm, at(ms+4), at(ms+5), "10.0.0.1")
	}
	c.TakeReady()
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("25 s after the faults ended, every node answering, n2 streaming timeline 1 from n1 and listed, nothing on timeline 2: %+v (histTL: n1 %d, n2 %d, node 3 %d)",
			e, c.Node(1).histTL(), c.Node(2).histTL(), c.Node(3).histTL())
	}
}

// allAnsweredSince takes a check that ended after the file was shown
// for one that saw the node after it: ResAt is when the answer came, not
// when the server said it. A check of n3 that began before n3's promotion
// (it found n3 still a replica on timeline 1) and ended after n2 showed
// 00000002.history (fetched from n3 once promoted) counts as "n3 answered
// since", and once n2, left behind past the fork point, streams timeline 1
// from the old master, n1 is elected on timeline 1 while n3 is master on
// timeline 2 (until n3's next check). The writes n1 takes meanwhile are
// lost when the cluster goes on with timeline 2.
func TestACheckBegunBeforeTheFileIsNoAnswer(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	m := master(1, 5000, "n2", "n3")
	r2 := replica("n2", 1, 1, 5000)
	r2.UpstreamHost, r2.UpstreamPort = "10.0.0.1", 5432
	r3 := replica("n3", 1, 1, 4000)
	r3.UpstreamHost, r3.UpstreamPort = "10.0.0.1", 5432
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, r2, at(3), at(4), "10.0.0.2")
	c.CheckOK(3, r3, at(5), at(6), "10.0.0.3")
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("start: %+v", e)
	}
	// A failover script cut off from n1 (n1 runs on: not fenced) promotes
	// n3 at 1010 and repoints n2 to it. n2, past the fork point, fetches
	// 00000002.history and cannot follow: no walreceiver.
	// This Manager's check of n3 began at 1000, before the promotion; its
	// answer (n3 a replica on timeline 1, its walreceiver gone) comes
	// late, at 1300.
	h := replica("n2", 1, 0, 5000)
	h.HistoryTimeline = 2
	c.CheckOK(2, h, at(1100), at(1110), "10.0.0.2")
	c.CheckOK(1, master(1, 5100), at(1120), at(1121), "10.0.0.1")
	if e := c.Elected(); e.Master != nil || e.Timeline != 2 {
		t.Fatalf("n2 shows timeline 2's history file: n1 must be stale: %+v", e)
	}
	old3 := replica("n3", 1, 0, 4000) // sampled at 1005, before the promotion
	c.CheckOK(3, old3, at(1000), at(1300), "10.0.0.3")
	// n2's walreceiver goes to the other host of its primary_conninfo, n1,
	// and streams timeline 1 from it (left behind); n1 lists it.
	s := replica("n2", 1, 1, 5200)
	s.UpstreamHost, s.UpstreamPort = "10.0.0.1", 5432
	c.CheckOK(2, s, at(1400), at(1410), "10.0.0.2")
	c.CheckOK(1, master(1, 5300, "n2"), at(1420), at(1421), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 (core timeline %d): the only check of n3 since n2 showed timeline 2's history file began at 1000 ms, before that file was shown (1100-1110 ms), and n3 was promoted in between",
			e.Master.Addr, c.Timeline())
	}
}

// allAnsweredSince looks at vouched nodes only: a server of the set
// on the newer timeline that answers but is not vouched (discovered, never
// seen as a replica by this Manager: a fresh Manager, or one whose check
// of it restarted) does not keep the proof, even when the replica that
// holds the file streams from it. n3 (discovered) was promoted to timeline
// 2; n2, behind the fork point, fetched 00000002.history from it and
// streams timeline 1 from n3 toward the switch point (received_tli 1).
// n3's walsenders list n2. n1, the old master, runs on. The file's proof
// is dropped and n1 elected on timeline 1 while n3 takes writes on 2.
func TestUnvouchedNewTimelineMasterKeepsTheProof(t *testing.T) {
	c := New(Config{})
	mbs := members(3)
	mbs[2].Trusted = false // n3 from discovery
	c.SetMembers(at(0), mbs)
	old := master(1, 6000)
	old.StartTime = t0.Add(time.Hour)
	c.CheckOK(1, old, at(1), at(2), "10.0.0.1")
	h := replica("n2", 1, 0, 4000)
	h.HistoryTimeline = 2
	c.CheckOK(2, h, at(1), at(3), "10.0.0.2")
	nm := master(2, 7000, "n2")
	nm.Name = "n3"
	nm.StartTime = t0.Add(2 * time.Hour)
	c.CheckOK(3, nm, at(1), at(4), "10.0.0.3")
	c.CheckOK(1, old, at(5), at(6), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("start: %+v", e)
	}
	r := replica("n2", 1, 1, 4500) // timeline 1 from n3, toward the switch point
	r.UpstreamHost, r.UpstreamPort = "10.0.0.3", 5432
	nm.LSN = 7100
	c.CheckOK(2, r, at(10), at(11), "10.0.0.2")
	c.CheckOK(3, nm, at(12), at(13), "10.0.0.3")
	c.CheckOK(1, old, at(14), at(15), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 (core timeline %d) while n2, which holds timeline 2's history file, streams from n3 (writable, timeline 2, in the set, answering; vouched %v)",
			e.Master.Addr, c.Timeline(), c.Node(3).Vouched)
	}
}

// bcdcadd counts, before the cluster is learned, the timelines vouched
// nodes of x's system identifier show (newestOf), but only bestTimeline:
// not the history file that f48019f counts once the cluster is known. The
// case bcdcadd fixed, with the proof a history file: n3's first check is
// under way (hung: it takes the check timeout), n2 (trusted) has no
// walreceiver and holds 00000002.history (it followed timeline 2 from n3;
// its control data still shows 1). n1, the old master on timeline 1, runs
// on; nothing confirms it (its walsenders list nobody), so the cluster is
// not learned and n1 is elected until n3's first check ends.
func TestHistoryFileCountsBeforeTheClusterIsKnown(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	c.CheckOK(1, master(1, 9000), at(1), at(2), "10.0.0.1")
	r := replica("n2", 1, 0, 8000)
	r.HistoryTimeline = 2
	c.CheckOK(2, r, at(1), at(3), "10.0.0.2")
	c.CheckOK(1, master(1, 9100), at(4), at(5), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s (timeline 1) elected while n2, trusted, holds timeline 2's history file and n3's first check is under way: cluster %d, core timeline %d",
			e.Master.Addr, c.Cluster(), c.Timeline())
	}
}

// What a vouched node showed while the cluster was not learned is not
// remembered: newestOf looks at live nodes only, and seenTL is raised only
// for nodes of c.cluster. n2 (trusted) streams timeline 2 (from n3, whose
// first check hangs): n1, on 1, is stale by newestOf. n2 goes down before
// n3's first check ends; when it ends the cluster is learned from n1 alone,
// and n1 is elected on timeline 1 although this Manager saw a vouched
// replica of its cluster stream timeline 2 (DESIGN.md: the Manager
// remembers the highest timeline it has seen).
func TestTimelineSeenBeforeTheClusterIsKnownIsKept(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	c.CheckOK(1, master(1, 9000), at(1), at(2), "10.0.0.1")
	r := replica("n2", 2, 2, 8000)
	r.UpstreamHost, r.UpstreamPort = "10.0.0.3", 5432
	c.CheckOK(2, r, at(1), at(3), "10.0.0.2")
	c.CheckOK(1, master(1, 9100), at(4), at(5), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("setup (bcdcadd's case): %+v", e)
	}
	c.CheckFailed(2, errors.New("connection refused"), false, at(500))
	c.CheckFailed(3, errors.New("check timed out"), true, at(2000))
	c.CheckOK(1, master(1, 9200), at(2001), at(2002), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 (cluster %d, core timeline %d): n2, trusted, of its system identifier, was seen streaming timeline 2 at 3 ms",
			e.Master.Addr, c.Cluster(), c.Timeline())
	}
}

// The same with the newer timeline's master outside the set (a
// discoverer that has not reported it yet, a DSN written before it was
// added): every node of the set answers, and n2, holding
// 00000002.history, streams timeline 1 toward the switch point from
// 10.0.0.9, which no node of the set is. n1 is elected on timeline 1.
func TestReplicaStreamingFromOutsideTheSetKeepsTheProof(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	old := master(1, 6000)
	old.StartTime = t0.Add(time.Hour)
	c.CheckOK(1, old, at(1), at(2), "10.0.0.1")
	h := replica("n2", 1, 0, 4000)
	h.HistoryTimeline = 2
	c.CheckOK(2, h, at(1), at(3), "10.0.0.2")
	c.CheckOK(1, old, at(5), at(6), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("start: %+v", e)
	}
	r := replica("n2", 1, 1, 4500)
	r.UpstreamHost, r.UpstreamPort = "10.0.0.9", 5432
	c.CheckOK(2, r, at(10), at(11), "10.0.0.2")
	c.CheckOK(1, old, at(14), at(15), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 (core timeline %d) while n2, which holds timeline 2's history file, streams from 10.0.0.9, not n1 and not in the set",
			e.Master.Addr, c.Timeline())
	}
}
