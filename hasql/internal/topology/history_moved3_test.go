package topology

import (
	"slices"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// TestNamesSwappedOneAtATimeKeepBothProofs: S (whose file proves timeline
// 2) at n2 and T (a leftover file of timeline 2) at n3 swap names one at a
// time: each node holds a proof per server, so S's proof, moved onto n3
// while n3 holds T's, stays when T's moves on to n2 and ends there.
func TestNamesSwappedOneAtATimeKeepBothProofs(t *testing.T) {
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

	// S streams timeline 1 from n5 (outside the set); T from n1.
	ss := s
	ss.HistoryTimeline = 0
	ss.ReceiveTimeline, ss.UpstreamHost, ss.UpstreamPort = 1, "10.0.0.9", 5432
	ts := tr
	ts.HistoryTimeline = 0
	ts.ReceiveTimeline, ts.UpstreamHost, ts.UpstreamPort = 1, "10.0.0.1", 5432

	// Step 1: S answers at n3, n2 refused (T down).
	for i := 0; i < 5; i++ {
		ms := 100 + 100*i
		c.CheckFailed(2, errRefused, false, at(ms))
		c.CheckOK(3, ss, at(ms+2), at(ms+3), "10.0.0.2")
		c.CheckOK(1, old, at(ms+4), at(ms+5), "10.0.0.1")
	}
	if e := c.Elected(); e.Master != nil || c.Node(2).histTL() != 0 || c.Node(3).histTL() != 2 || !c.Node(3).holdsProof(tr.Server()) {
		t.Fatalf("after step 1: %+v histTL n2 %d n3 %d (n3's from T: %v)", e, c.Node(2).histTL(), c.Node(3).histTL(), c.Node(3).holdsProof(tr.Server()))
	}
	// S's proof is gone: only T's, at n3, is left.

	// Step 2: T answers at n2.
	for i := 0; i < 20; i++ {
		ms := 1000 + 100*i
		c.CheckOK(2, ts, at(ms), at(ms+1), "10.0.0.3")
		c.CheckOK(3, ss, at(ms+2), at(ms+3), "10.0.0.2")
		o := master(1, 6000, "t")
		o.StartTime = old.StartTime
		o.Replicas[0].ClientAddr = "10.0.0.3"
		c.CheckOK(1, o, at(ms+4), at(ms+5), "10.0.0.1")
	}
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 (core timeline %d, histTL n2 %d n3 %d): S, which showed timeline 2's history file, answers at n3 streaming from outside the set, but its proof was dropped when it moved onto n3's equal-timeline proof of T",
			e.Master.Addr, c.Timeline(), c.Node(2).histTL(), c.Node(3).histTL())
	}
}

// TestPreClusterRecordsFilledFirstStillTakeAHistoryFile: before the cluster
// is learned, a server that answered at n2 under many system identifiers
// first does not keep out the history file S shows there after: records
// without a file give their place.
func TestPreClusterRecordsFilledFirstStillTakeAHistoryFile(t *testing.T) {
	for _, withRogue := range []bool{false, true} {
		name := "control: without the rogue's answers"
		if withRogue {
			name = "rogue answers at n2 under eight system identifiers first"
		}
		t.Run(name, func(t *testing.T) {
			c := New(Config{})
			c.SetMembers(at(0), members(3))
			old := master(1, 6000)
			old.StartTime = t0.Add(time.Hour)
			c.CheckOK(1, old, at(1), at(2), "10.0.0.1")
			if withRogue {
				for k := 1; k <= maxPre; k++ {
					r := replica("s", 1, 1, 100)
					r.SystemID = sys + uint64(k)
					r.StartTime = t0.Add(time.Duration(10+k) * time.Hour)
					r.UpstreamHost, r.UpstreamPort = "10.0.0.66", 5432
					c.CheckOK(2, r, at(10+10*k), at(11+10*k), "10.0.0.66")
				}
			}
			s := replica("s", 1, 0, 4000)
			s.StartTime = t0.Add(5 * time.Hour)
			s.HistoryTimeline = 2
			c.CheckOK(2, s, at(103), at(104), "10.0.0.2")
			c.CheckOK(1, old, at(105), at(106), "10.0.0.1")
			if c.Cluster() != 0 {
				t.Fatalf("setup: cluster %d learned", c.Cluster())
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
				t.Fatalf("%s elected on timeline 1 (core timeline %d, histTL n2 %d): S showed timeline 2's history file at n2 before the cluster was learned; a server that answered at n2 under %d other system identifiers before it filled the records, and S's was refused",
					e.Master.Addr, c.Timeline(), c.Node(2).histTL(), maxPre)
			}
		})
	}
}

// TestANewerProofKeepsAnOlderOneOfAnotherServer: a leftover file of
// timeline 3 moved onto a node that holds a real one of timeline 2 does not
// replace it: when the leftover one ends, timeline 2's stays.
func TestANewerProofKeepsAnOlderOneOfAnotherServer(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	old := master(1, 6000)
	old.StartTime = t0.Add(time.Hour)
	c.CheckOK(1, old, at(1), at(2), "10.0.0.1")

	s := replica("s", 1, 0, 6000) // old branch; leftover file of timeline 3
	s.StartTime = t0.Add(5 * time.Hour)
	s.HistoryTimeline = 3
	c.CheckOK(2, s, at(3), at(4), "10.0.0.2")
	tr := replica("t", 1, 0, 4000) // behind n5's fork point; file fetched from n5
	tr.StartTime = t0.Add(6 * time.Hour)
	tr.HistoryTimeline = 2
	c.CheckOK(3, tr, at(5), at(6), "10.0.0.3")
	c.CheckOK(1, old, at(7), at(8), "10.0.0.1")
	if e := c.Elected(); e.Master != nil || c.Node(2).histTL() != 3 || c.Node(3).histTL() != 2 {
		t.Fatalf("setup: %+v histTL n2 %d n3 %d", e, c.Node(2).histTL(), c.Node(3).histTL())
	}

	ss := s // streams timeline 1 from n1
	ss.HistoryTimeline = 0
	ss.ReceiveTimeline, ss.UpstreamHost, ss.UpstreamPort = 1, "10.0.0.1", 5432
	ts := tr // streams timeline 1 from n5, outside the set
	ts.HistoryTimeline = 0
	ts.ReceiveTimeline, ts.UpstreamHost, ts.UpstreamPort = 1, "10.0.0.9", 5432

	// Step 1: S answers at n3, n2 refused.
	for i := 0; i < 5; i++ {
		ms := 100 + 100*i
		c.CheckFailed(2, errRefused, false, at(ms))
		c.CheckOK(3, ss, at(ms+2), at(ms+3), "10.0.0.2")
		c.CheckOK(1, old, at(ms+4), at(ms+5), "10.0.0.1")
	}
	if e := c.Elected(); e.Master != nil || c.Node(3).histTL() != 3 || !c.Node(3).holdsProof(s.Server()) {
		t.Fatalf("after step 1: %+v histTL n2 %d n3 %d", e, c.Node(2).histTL(), c.Node(3).histTL())
	}
	// T's proof of timeline 2 is gone: n3 holds S's of timeline 3 only.

	// Step 2: T answers at n2; n1 lists S.
	for i := 0; i < 20; i++ {
		ms := 1000 + 100*i
		c.CheckOK(2, ts, at(ms), at(ms+1), "10.0.0.3")
		c.CheckOK(3, ss, at(ms+2), at(ms+3), "10.0.0.2")
		o := master(1, 6000, "s")
		o.StartTime = old.StartTime
		o.Replicas[0].ClientAddr = "10.0.0.2"
		c.CheckOK(1, o, at(ms+4), at(ms+5), "10.0.0.1")
	}
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 (core timeline %d, histTL n2 %d n3 %d): T, which showed timeline 2's history file, answers at n2 streaming from outside the set, but its proof was pushed out at n3 by S's leftover proof of timeline 3, which then ended",
			e.Master.Addr, c.Timeline(), c.Node(2).histTL(), c.Node(3).histTL())
	}
}

// TestProofHandedOverWhenTheOtherAddressIsRedescribed: the set change that
// drops one address of S also re-describes the node at S's other address:
// the proof goes there all the same (vouched as before the change).
func TestProofHandedOverWhenTheOtherAddressIsRedescribed(t *testing.T) {
	for _, redescribe := range []bool{false, true} {
		name := "control: n2 unchanged"
		if redescribe {
			name = "n2 redescribed in the same SetMembers"
		}
		t.Run(name, func(t *testing.T) {
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

			next := append([]Member(nil), mb[:2]...) // the VIP n3 is dropped
			if redescribe {
				next[1].Name = "s"
			}
			c.SetMembers(at(20), next)
			for i := 0; i < 10; i++ {
				ms := 100 + 100*i
				c.CheckOK(2, s, at(ms), at(ms+1), "10.0.0.2")
				c.CheckOK(1, old, at(ms+2), at(ms+3), "10.0.0.1")
			}
			if e := c.Elected(); e.Master != nil {
				t.Fatalf("%s elected on timeline 1 (core timeline %d, histTL n2 %d, n2 vouched %v): S, which showed timeline 2's history file, still answers at n2 and streams from outside the set; its VIP n3 left the set in the SetMembers that redescribed n2",
					e.Master.Addr, c.Timeline(), c.Node(2).histTL(), c.Node(2).Vouched)
			}
		})
	}
}

// TestPreClusterRecordNotTakenOverByAnotherHolder: before the cluster is
// learned, U, another server with a leftover file of the same timeline,
// answering at n2 does not take over what S showed there.
func TestPreClusterRecordNotTakenOverByAnotherHolder(t *testing.T) {
	for _, uShowsFile := range []bool{false, true} {
		name := "control: U never shows the file"
		if uShowsFile {
			name = "U shows a leftover file of timeline 2 before the cluster is learned"
		}
		t.Run(name, func(t *testing.T) {
			c := New(Config{})
			c.SetMembers(at(0), members(3))
			old := master(1, 6000)
			old.StartTime = t0.Add(time.Hour)
			c.CheckOK(1, old, at(1), at(2), "10.0.0.1")

			s := replica("s", 1, 0, 4000) // behind n5's fork point; file fetched from n5
			s.StartTime = t0.Add(5 * time.Hour)
			s.HistoryTimeline = 2
			c.CheckOK(2, s, at(3), at(4), "10.0.0.2")
			c.CheckOK(1, old, at(5), at(6), "10.0.0.1")
			if e := c.Elected(); e.Master != nil || c.Cluster() != 0 {
				t.Fatalf("setup: %+v cluster %d", e, c.Cluster())
			}

			u := replica("u", 1, 0, 6000)
			u.StartTime = t0.Add(7 * time.Hour)
			if uShowsFile {
				u.HistoryTimeline = 2
				c.CheckOK(2, u, at(10), at(11), "10.0.0.7")
				c.CheckOK(1, old, at(12), at(13), "10.0.0.1")
			}
			us := u
			us.HistoryTimeline = 0
			us.ReceiveTimeline, us.UpstreamHost, us.UpstreamPort = 1, "10.0.0.1", 5432
			r3 := replica("n3", 1, 1, 6000)
			r3.StartTime = t0.Add(3 * time.Hour)
			r3.UpstreamHost, r3.UpstreamPort = "10.0.0.1", 5432
			m := master(1, 6000, "n3", "u")
			m.StartTime = old.StartTime
			m.Replicas[1].ClientAddr = "10.0.0.7"
			for i := 0; i < 10; i++ {
				ms := 100 + 100*i
				c.CheckOK(2, us, at(ms), at(ms+1), "10.0.0.7")
				c.CheckOK(3, r3, at(ms+2), at(ms+3), "10.0.0.3")
				c.CheckOK(1, m, at(ms+4), at(ms+5), "10.0.0.1")
			}
			if c.Cluster() != sys {
				t.Fatalf("cluster %d not learned", c.Cluster())
			}
			if e := c.Elected(); e.Master != nil {
				t.Fatalf("%s elected on timeline 1 (core timeline %d, histTL n2 %d): S, which showed timeline 2's history file at n2 before the cluster was learned, is checked nowhere; U, another server with a leftover file of that timeline, took the pre-cluster record over and its streaming ended the proof",
					e.Master.Addr, c.Timeline(), c.Node(2).histTL())
			}
		})
	}
}

// TestSameTimelineFileOfAnotherServerIsKept: S shows timeline 2's file at
// n2, which holds T's leftover proof of the same timeline: S's is kept
// too, and stays when T's moves with T and ends.
func TestSameTimelineFileOfAnotherServerIsKept(t *testing.T) {
	for _, tShowed := range []bool{false, true} {
		name := "control: T never showed the file at n2"
		if tShowed {
			name = "T showed a leftover file at n2 first"
		}
		t.Run(name, func(t *testing.T) {
			c := New(Config{})
			c.SetMembers(at(0), members(3))
			old := master(1, 6000)
			old.StartTime = t0.Add(time.Hour)
			c.CheckOK(1, old, at(1), at(2), "10.0.0.1")
			r3 := replica("n3", 1, 1, 6000)
			r3.StartTime = t0.Add(3 * time.Hour)
			r3.UpstreamHost, r3.UpstreamPort = "10.0.0.1", 5432
			c.CheckOK(3, r3, at(3), at(4), "10.0.0.3")

			tr := replica("t", 1, 0, 6000) // old branch
			tr.StartTime = t0.Add(6 * time.Hour)
			if tShowed {
				tr.HistoryTimeline = 2 // leftover
			}
			c.CheckOK(2, tr, at(5), at(6), "10.0.0.7")
			c.CheckOK(1, old, at(7), at(8), "10.0.0.1")

			// The name n2 moves to S, walreceiver down, file fetched from n5.
			s := replica("s", 1, 0, 4000)
			s.StartTime = t0.Add(5 * time.Hour)
			s.HistoryTimeline = 2
			c.CheckOK(2, s, at(10), at(11), "10.0.0.2")
			c.CheckOK(1, old, at(12), at(13), "10.0.0.1")
			c.CheckOK(3, r3, at(14), at(15), "10.0.0.3")
			if e := c.Elected(); e.Master != nil || c.Node(2).histTL() != 2 {
				t.Fatalf("setup: %+v histTL n2 %d", e, c.Node(2).histTL())
			}
			if tShowed && !c.Node(2).holdsProof(tr.Server()) {
				t.Fatalf("setup: n2's proof is not T's")
			}

			// S streams from n5 (outside the set); T answers at n3 streaming
			// timeline 1 from n1, listed by it.
			ss := s
			ss.HistoryTimeline = 0
			ss.ReceiveTimeline, ss.UpstreamHost, ss.UpstreamPort = 1, "10.0.0.9", 5432
			ts := tr
			ts.HistoryTimeline = 0
			ts.ReceiveTimeline, ts.UpstreamHost, ts.UpstreamPort = 1, "10.0.0.1", 5432
			m := master(1, 6000, "t")
			m.StartTime = old.StartTime
			m.Replicas[0].ClientAddr = "10.0.0.7"
			for i := 0; i < 20; i++ {
				ms := 100 + 100*i
				c.CheckOK(2, ss, at(ms), at(ms+1), "10.0.0.2")
				c.CheckOK(3, ts, at(ms+2), at(ms+3), "10.0.0.7")
				c.CheckOK(1, m, at(ms+4), at(ms+5), "10.0.0.1")
			}
			if e := c.Elected(); e.Master != nil {
				t.Fatalf("%s elected on timeline 1 (core timeline %d, histTL n2 %d n3 %d): S showed timeline 2's history file at n2 and streams from outside the set; its showing was refused because n2 held T's leftover proof of the same timeline, which then moved to n3 with T and ended",
					e.Master.Addr, c.Timeline(), c.Node(2).histTL(), c.Node(3).histTL())
			}
		})
	}
}

// holdsProof reports whether x holds a history-file proof shown by s.
func (x *Node) holdsProof(s checker.ServerID) bool {
	return slices.ContainsFunc(x.proofs, func(p histProof) bool { return p.server == s })
}
