package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

var errRefused = errors.New("connection refused")

// TestSwappedNamesKeepBothProofs: two replicas each showed timeline 2's
// history file, S (fetched from the new master outside the set) at n2 and
// T (left over) at n3; their names swap. The proofs move at once, each with
// its server: T's, at n2, ends when T streams timeline 1 from n1, and S's,
// at n3, stays while S streams from outside the set: n1 must stay stale.
func TestSwappedNamesKeepBothProofs(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	old := master(1, 6000)
	old.StartTime = t0.Add(time.Hour)
	c.CheckOK(1, old, at(1), at(2), "10.0.0.1")

	s := replica("s", 1, 0, 4000) // behind n5's fork point; file fetched from n5
	s.StartTime = t0.Add(5 * time.Hour)
	s.HistoryTimeline = 2
	c.CheckOK(2, s, at(3), at(4), "10.0.0.2")
	tr := replica("t", 1, 0, 6000) // old branch; leftover file
	tr.StartTime = t0.Add(6 * time.Hour)
	tr.HistoryTimeline = 2
	c.CheckOK(3, tr, at(5), at(6), "10.0.0.3")
	c.CheckOK(1, old, at(7), at(8), "10.0.0.1")
	if e := c.Elected(); e.Master != nil || c.Node(2).histTL() != 2 || c.Node(3).histTL() != 2 {
		t.Fatalf("setup: %+v histTL n2 %d n3 %d", e, c.Node(2).histTL(), c.Node(3).histTL())
	}

	// The names swap. S streams timeline 1 from n5 (outside the set); T
	// streams timeline 1 from n1.
	ss := s
	ss.HistoryTimeline = 0
	ss.ReceiveTimeline, ss.UpstreamHost, ss.UpstreamPort = 1, "10.0.0.9", 5432
	ts := tr
	ts.HistoryTimeline = 0
	ts.ReceiveTimeline, ts.UpstreamHost, ts.UpstreamPort = 1, "10.0.0.1", 5432
	for i := 0; i < 10; i++ {
		ms := 100 + 100*i
		c.CheckOK(2, ts, at(ms), at(ms+1), "10.0.0.3")
		c.CheckOK(3, ss, at(ms+2), at(ms+3), "10.0.0.2")
		c.CheckOK(1, old, at(ms+4), at(ms+5), "10.0.0.1")
	}
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 (core timeline %d, histTL n2 %d n3 %d): S, which showed timeline 2's history file, streams from outside the set at n3; its proof was cleared because n3 held T's, and T's then followed T to n2 and ended there",
			e.Master.Addr, c.Timeline(), c.Node(2).histTL(), c.Node(3).histTL())
	}
}

// TestRestartedHolderStreamingFromTheMasterEndsALeftoverProof: a restart
// of the replica that showed a leftover history file gives it a new start
// time (another ServerID) but the same name: once it streams timeline 1
// from the master, listed by it, with every node answering, the proof ends
// and the master takes writes again.
func TestRestartedHolderStreamingFromTheMasterEndsALeftoverProof(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	r := replica("n2", 1, 1, 1000)
	r.UpstreamHost, r.UpstreamPort = "10.0.0.1", 5432
	c.CheckOK(1, master(1, 1000, "n2"), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, r, at(3), at(4), "10.0.0.2")
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("start: %+v", e)
	}
	// n1 restarts: refused for a moment; n2's walreceiver is down meanwhile.
	c.CheckFailed(1, errRefused, false, at(10))
	down := r
	down.ReceiveTimeline, down.UpstreamHost, down.UpstreamPort = 0, "", 0
	down.HistoryTimeline = 2 // leftover
	c.CheckOK(2, down, at(11), at(12), "10.0.0.2")
	if e := c.Elected(); e.Master != nil || c.Timeline() != 2 {
		t.Fatalf("setup: %+v timeline %d", e, c.Timeline())
	}
	// n2 restarts too; both stream / take writes from here on.
	r2 := r
	r2.StartTime = t0.Add(2 * time.Hour)
	for i := 0; i < 50; i++ {
		ms := 100 + 500*i
		m := master(1, checker.LSN(1000+100*i), "n2")
		m.StartTime = t0.Add(time.Hour)
		c.CheckOK(1, m, at(ms), at(ms+1), "10.0.0.1")
		rr := r2
		rr.LSN, rr.ReceiveLSN = checker.LSN(1000+100*i), checker.LSN(1000+100*i)
		c.CheckOK(2, rr, at(ms+2), at(ms+3), "10.0.0.2")
	}
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("after n1's and n2's restarts, 25 s of n2 streaming timeline 1 from n1, listed by it, every node answering: %+v (core timeline %d, histTL n2 %d)",
			e, c.Timeline(), c.Node(2).histTL())
	}
}

// TestAnotherHolderOfTheFileDoesNotTakeOverTheProof: a name moved off S,
// which showed timeline 2's history file, onto U, another replica holding
// a leftover file of that timeline: U showing it does not make the proof
// U's, so U streaming timeline 1 from n1 does not end it while S is checked
// nowhere.
func TestAnotherHolderOfTheFileDoesNotTakeOverTheProof(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	old := master(1, 6000)
	old.StartTime = t0.Add(time.Hour)
	c.CheckOK(1, old, at(1), at(2), "10.0.0.1")

	s := replica("s", 1, 0, 4000) // behind n5's fork point; file fetched from n5
	s.StartTime = t0.Add(5 * time.Hour)
	s.HistoryTimeline = 2
	c.CheckOK(2, s, at(3), at(4), "10.0.0.2")
	c.CheckOK(1, old, at(5), at(6), "10.0.0.1")
	if e := c.Elected(); e.Master != nil || c.Node(2).histTL() != 2 {
		t.Fatalf("setup: %+v histTL n2 %d", e, c.Node(2).histTL())
	}

	// The name n2 moves to U: once with its walreceiver down (leftover
	// file shown), then streaming timeline 1 from n1.
	u := replica("u", 1, 0, 6000)
	u.StartTime = t0.Add(7 * time.Hour)
	u.HistoryTimeline = 2
	c.CheckOK(2, u, at(10), at(11), "10.0.0.7")
	c.CheckOK(1, old, at(12), at(13), "10.0.0.1")
	us := u
	us.HistoryTimeline = 0
	us.ReceiveTimeline, us.UpstreamHost, us.UpstreamPort = 1, "10.0.0.1", 5432
	for i := 0; i < 10; i++ {
		ms := 100 + 100*i
		c.CheckOK(2, us, at(ms), at(ms+1), "10.0.0.7")
		c.CheckOK(1, old, at(ms+2), at(ms+3), "10.0.0.1")
	}
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 (core timeline %d, histTL n2 %d): S, which showed timeline 2's history file, is checked nowhere; U, another server with a leftover file of that timeline, took the proof over and ended it",
			e.Master.Addr, c.Timeline(), c.Node(2).histTL())
	}
}

// TestProofStaysWithTheServerWhenAnAddressOfItLeaves: the proof held by
// one address of S (a VIP) goes to another node of the set where S answers
// when discovery drops that address.
func TestProofStaysWithTheServerWhenAnAddressOfItLeaves(t *testing.T) {
	c := New(Config{})
	mb := members(3)
	c.SetMembers(at(0), mb)
	old := master(1, 6000)
	old.StartTime = t0.Add(time.Hour)
	c.CheckOK(1, old, at(1), at(2), "10.0.0.1")

	s := replica("s", 1, 1, 4000)
	s.StartTime = t0.Add(5 * time.Hour)
	s.UpstreamHost, s.UpstreamPort = "10.0.0.9", 5432
	c.CheckOK(2, s, at(3), at(4), "10.0.0.2")
	h := s // walreceiver down for a moment: checked through the VIP n3
	h.ReceiveTimeline, h.UpstreamHost, h.UpstreamPort = 0, "", 0
	h.HistoryTimeline = 2
	c.CheckOK(3, h, at(5), at(6), "10.0.0.2")
	c.CheckOK(1, old, at(7), at(8), "10.0.0.1")
	c.CheckOK(2, s, at(9), at(10), "10.0.0.2")
	if e := c.Elected(); e.Master != nil || c.Node(3).histTL() != 2 {
		t.Fatalf("setup: %+v histTL n3 %d", e, c.Node(3).histTL())
	}

	c.SetMembers(at(20), mb[:2]) // the VIP n3 is dropped
	for i := 0; i < 10; i++ {
		ms := 100 + 100*i
		c.CheckOK(2, s, at(ms), at(ms+1), "10.0.0.2")
		c.CheckOK(1, old, at(ms+2), at(ms+3), "10.0.0.1")
	}
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 (core timeline %d, histTL n2 %d): S, which showed timeline 2's history file, still answers at n2 and streams from outside the set; only its second address n3 left the set",
			e.Master.Addr, c.Timeline(), c.Node(2).histTL())
	}
}

// TestRogueCannotEvictAPreClusterRecord: before the cluster is learned, a
// server answering at a trusted node under ever new system identifiers
// cannot push out the record of the history file S showed there.
func TestRogueCannotEvictAPreClusterRecord(t *testing.T) {
	for _, withRogue := range []bool{false, true} {
		name := "control: without the rogue's answers"
		if withRogue {
			name = "rogue answers at n2 under eight system identifiers"
		}
		t.Run(name, func(t *testing.T) {
			c := New(Config{})
			c.SetMembers(at(0), members(3))
			old := master(1, 6000)
			old.StartTime = t0.Add(time.Hour)
			c.CheckOK(1, old, at(1), at(2), "10.0.0.1")
			s := replica("s", 1, 0, 4000)
			s.StartTime = t0.Add(5 * time.Hour)
			s.HistoryTimeline = 2
			c.CheckOK(2, s, at(3), at(4), "10.0.0.2")
			c.CheckOK(1, old, at(5), at(6), "10.0.0.1")
			if e := c.Elected(); e.Master != nil || c.Cluster() != 0 {
				t.Fatalf("setup: %+v cluster %d", e, c.Cluster())
			}
			if withRogue {
				for k := 1; k <= maxPre; k++ {
					r := replica("s", 1, 1, 100)
					r.SystemID = sys + uint64(k)
					r.StartTime = t0.Add(time.Duration(10+k) * time.Hour)
					r.UpstreamHost, r.UpstreamPort = "10.0.0.66", 5432
					c.CheckOK(2, r, at(10+10*k), at(11+10*k), "10.0.0.66")
				}
			}
			c.CheckFailed(2, errRefused, false, at(200))
			r3 := replica("n3", 1, 1, 6000)
			r3.StartTime = t0.Add(3 * time.Hour)
			r3.UpstreamHost, r3.UpstreamPort = "10.0.0.1", 5432
			for i := 0; i < 10; i++ {
				ms := 300 + 100*i
				c.CheckOK(3, r3, at(ms), at(ms+1), "10.0.0.3")
				c.CheckFailed(2, errRefused, false, at(ms+2))
				c.CheckOK(1, old, at(ms+3), at(ms+4), "10.0.0.1")
			}
			if c.Cluster() != sys {
				t.Fatalf("cluster %d not learned", c.Cluster())
			}
			if e := c.Elected(); e.Master != nil {
				t.Fatalf("%s elected on timeline 1 (core timeline %d, histTL n2 %d): S showed timeline 2's history file at n2 before the cluster was learned; a rogue answering at n2 under %d other system identifiers evicted that record",
					e.Master.Addr, c.Timeline(), c.Node(2).histTL(), maxPre)
			}
		})
	}
}
