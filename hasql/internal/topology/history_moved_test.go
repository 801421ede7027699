package topology

import (
	"testing"
	"time"
)

// TestMovedNameToAStreamingHolderKeepsTheProof: when the server that
// showed the file answers at another node y, the proof goes with it to y
// (moveHistory) and ends by y's rules: y itself records a proof only from a
// check that shows the file with no walreceiver, which a holder that
// streams at y's checks never does.
//
// Set n1, n2, n3 (all trusted). n1 is the old master (timeline 1). n4
// (10.0.0.9, outside the set) was promoted to timeline 2 and takes writes.
// Server S (a replica behind n4's fork point) is reached both by n3 and,
// for a while, by the name n2. S streams timeline 1 toward the switch point
// from n4 (ReceiveTimeline 1, upstream 10.0.0.9) when n3 checks it; at
// n2's check its walreceiver is down and it shows 00000002.history: n2's
// proof, histTL 2, keeps n1 stale. The name n2 then moves to T, a replica
// of n1 on timeline 1. Every node answers and nothing in the set shows
// timeline 2; dropping the proof because S answers at n3 (which never had
// one: S streamed at each of its checks) elected n1 on timeline 1 while n4
// takes writes on timeline 2, and a write to n1 landed on the abandoned
// branch.
//
// Without the moved name, S streaming timeline 1 from 10.0.0.9 keeps the
// proof (TestReplicaStreamingFromOutsideKeepsTheProofWithoutARestart):
// the move alone, which says nothing about the file, must not end it.
func TestMovedNameToAStreamingHolderKeepsTheProof(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	old := master(1, 6000, "t")
	old.StartTime = t0.Add(time.Hour)
	c.CheckOK(1, old, at(1), at(2), "10.0.0.1")

	s := replica("s", 1, 1, 4000)
	s.StartTime = t0.Add(5 * time.Hour)
	s.UpstreamHost, s.UpstreamPort = "10.0.0.9", 5432
	s.HistoryTimeline = 2
	c.CheckOK(3, s, at(3), at(4), "10.0.0.3")

	// S's walreceiver is down for a moment: checked through the name n2.
	h := s
	h.ReceiveTimeline, h.UpstreamHost, h.UpstreamPort = 0, "", 0
	c.CheckOK(2, h, at(5), at(6), "10.0.0.3")
	c.CheckOK(1, old, at(7), at(8), "10.0.0.1")
	if e := c.Elected(); e.Master != nil || c.Node(2).histTL() != 2 {
		t.Fatalf("setup: %+v histTL n2 %d", e, c.Node(2).histTL())
	}

	// S streams again (timeline 1, toward the switch point, from n4).
	c.CheckOK(3, s, at(10), at(11), "10.0.0.3")
	// The name n2 moves to T, a replica of n1 on timeline 1.
	tr := replica("t", 1, 1, 6000)
	tr.StartTime = t0.Add(7 * time.Hour)
	tr.UpstreamHost, tr.UpstreamPort = "10.0.0.1", 5432
	for i := 0; i < 10; i++ {
		ms := 100 + 100*i
		c.CheckOK(2, tr, at(ms), at(ms+1), "10.0.0.7")
		c.CheckOK(3, s, at(ms+2), at(ms+3), "10.0.0.3")
		c.CheckOK(1, old, at(ms+4), at(ms+5), "10.0.0.1")
	}
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 (core timeline %d, histTL n2 %d n3 %d): the server that showed timeline 2's history file (n3 now) streams timeline 1 from 10.0.0.9, outside the set, and only the name n2 moved",
			e.Master.Addr, c.Timeline(), c.Node(2).histTL(), c.Node(3).histTL())
	}
}

// TestNameMovedOffTheHolderOntoAReplicaOfTheOldMasterKeepsTheProof: when
// another server answers at x than the one that showed the file, and that
// server is checked nowhere else, what x's server streams says nothing of
// the file (unless it shows the file itself, as a restarted holder does):
// the proof stays.
//
// Set n1, n2 (trusted). n1 is the old master (timeline 1); n4 (10.0.0.9,
// outside the set) was promoted to timeline 2 and takes writes. The name
// n2 reaches S1, a replica behind n4's fork point holding
// 00000002.history, which streams timeline 1 toward the switch point from
// n4 (the proof is kept: TestReplicaStreamingFromOutsideKeepsTheProof
// WithoutARestart). The name n2 then moves (a VIP, a DNS name of the
// replica pool) to S2, another replica, which streams timeline 1 from n1.
// S1 is checked nowhere; nothing showed the file left over: n1 must stay
// stale while n4 takes writes on timeline 2.
//
// TestNameMovedOffTheFileHolderKeepsTheProof is the same with the name
// moved onto the master itself. The cost, documented: a name moved for good
// off the holder onto a server without the file keeps the old master stale
// until the holder answers in the set or ForgetTimeline.
func TestNameMovedOffTheHolderOntoAReplicaOfTheOldMasterKeepsTheProof(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	old := master(1, 6000)
	old.StartTime = t0.Add(time.Hour)
	c.CheckOK(1, old, at(1), at(2), "10.0.0.1")

	s1 := replica("s1", 1, 0, 4000) // behind n4's fork point; file fetched from n4
	s1.StartTime = t0.Add(5 * time.Hour)
	s1.HistoryTimeline = 2
	c.CheckOK(2, s1, at(3), at(4), "10.0.0.2")
	c.CheckOK(1, old, at(5), at(6), "10.0.0.1")
	// S1 streams timeline 1 toward the switch point from n4 (outside).
	st := s1
	st.ReceiveTimeline, st.UpstreamHost, st.UpstreamPort = 1, "10.0.0.9", 5432
	c.CheckOK(2, st, at(10), at(11), "10.0.0.2")
	c.CheckOK(1, old, at(12), at(13), "10.0.0.1")
	if e := c.Elected(); e.Master != nil || c.Node(2).histTL() != 2 {
		t.Fatalf("setup (the proof is kept while S1 streams from outside the set): %+v histTL n2 %d", e, c.Node(2).histTL())
	}

	// The name n2 moves to S2, a replica of n1 on timeline 1.
	s2 := replica("s2", 1, 1, 6000)
	s2.StartTime = t0.Add(7 * time.Hour)
	s2.UpstreamHost, s2.UpstreamPort = "10.0.0.1", 5432
	for i := 0; i < 10; i++ {
		ms := 100 + 100*i
		c.CheckOK(2, s2, at(ms), at(ms+1), "10.0.0.7")
		c.CheckOK(1, old, at(ms+2), at(ms+3), "10.0.0.1")
	}
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 (core timeline %d, histTL n2 %d): the server that showed timeline 2's history file is checked nowhere any more, and the replica of n1 the name n2 moved onto says nothing about that file",
			e.Master.Addr, c.Timeline(), c.Node(2).histTL())
	}
}

// TestPreClusterHistoryKeptWhenTheNameMovesToAnotherCluster: before the
// cluster's system identifier is learned, what a node showed is kept per
// system identifier, not reset when another server answers at the node;
// once the cluster is learned a node that answers with another system
// identifier keeps its proof too. A name that moves off the holder of a
// newer timeline's history file onto a server of another cluster keeps the
// proof whether the move comes before or after the cluster is learned.
//
// Set n1, n2, n3 (trusted). n1 is the old master on timeline 1, listing
// nobody yet; n4 (outside the set) was promoted to timeline 2 and takes
// writes. n3's first check is under way (the cluster is not learned). The
// name n2 reaches S1, a replica holding 00000002.history with no
// walreceiver: n1 is stale (newestOf). The name n2 then moves to a server
// of another cluster (a DNS name reused, a VIP moved): the record of S1's
// system identifier is kept.
// n3's check ends (a replica of n1, listed by it): the cluster is learned,
// S1, checked nowhere, still holds the file and n4 takes writes on timeline
// 2: n1 must stay stale, as it does with n3's check over before the move.
func TestPreClusterHistoryKeptWhenTheNameMovesToAnotherCluster(t *testing.T) {
	for _, learnedFirst := range []bool{true, false} {
		name := "move before the cluster is learned"
		if learnedFirst {
			name = "control: move after the cluster is learned"
		}
		t.Run(name, func(t *testing.T) {
			c := New(Config{})
			c.SetMembers(at(0), members(3))
			old := master(1, 6000, "n3")
			old.StartTime = t0.Add(time.Hour)
			r3 := replica("n3", 1, 1, 6000)
			r3.StartTime = t0.Add(3 * time.Hour)
			r3.UpstreamHost, r3.UpstreamPort = "10.0.0.1", 5432
			if learnedFirst {
				c.CheckOK(3, r3, at(1), at(2), "10.0.0.3")
			}
			c.CheckOK(1, old, at(3), at(4), "10.0.0.1")
			s1 := replica("s1", 1, 0, 4000)
			s1.StartTime = t0.Add(5 * time.Hour)
			s1.HistoryTimeline = 2
			c.CheckOK(2, s1, at(5), at(6), "10.0.0.2")
			c.CheckOK(1, old, at(7), at(8), "10.0.0.1")
			if e := c.Elected(); e.Master != nil {
				t.Fatalf("setup: %+v (cluster %d)", e, c.Cluster())
			}
			// The name n2 moves to a server of another cluster.
			f := replica("f", 3, 3, 100)
			f.SystemID = sys + 1
			f.StartTime = t0.Add(9 * time.Hour)
			f.UpstreamHost, f.UpstreamPort = "10.0.0.99", 5432
			for i := 0; i < 10; i++ {
				ms := 100 + 100*i
				c.CheckOK(2, f, at(ms), at(ms+1), "10.0.0.8")
				c.CheckOK(3, r3, at(ms+2), at(ms+3), "10.0.0.3")
				c.CheckOK(1, old, at(ms+4), at(ms+5), "10.0.0.1")
			}
			if e := c.Elected(); e.Master != nil {
				t.Fatalf("%s elected on timeline 1 (cluster %d, core timeline %d): S1, which showed timeline 2's history file, is checked nowhere any more and nothing showed the file left over",
					e.Master.Addr, c.Cluster(), c.Timeline())
			}
		})
	}
}

// TestPreClusterHistoryServerIsTheOneThatShowedIt: a history file shown
// before the cluster is learned keeps the server that showed it (not the
// one the node reaches when the cluster is learned): the name moving back
// onto the real holder is no move away from it.
//
// Set n1..n4 (trusted). n1 is the old master on timeline 1; n5 (outside
// the set) was promoted to timeline 2 and takes writes. n4's first check is
// under way: the cluster is not learned. The name n2 reaches S1, a replica
// behind n5's fork point holding 00000002.history with no walreceiver
// (recorded). The name n2 moves to S2 (n3's server, a replica that
// streams timeline 1 from outside the set, no file), then n4's check ends
// and the cluster is learned: n2's histServer is S2. The name n2 moves back
// to S1, which now streams timeline 1 toward the switch point from n5
// (10.0.0.9, outside the set): the same state in which the proof is kept
// when histServer is right (TestReplicaStreamingFromOutsideKeepsTheProof
// WithoutARestart): n1 must stay stale while n5 takes writes on timeline 2.
func TestPreClusterHistoryServerIsTheOneThatShowedIt(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(4))
	old := master(1, 6000, "n4")
	old.StartTime = t0.Add(time.Hour)
	c.CheckOK(1, old, at(1), at(2), "10.0.0.1")

	s1 := replica("s1", 1, 0, 4000)
	s1.StartTime = t0.Add(5 * time.Hour)
	s1.HistoryTimeline = 2
	c.CheckOK(2, s1, at(3), at(4), "10.0.0.2")

	s2 := replica("s2", 1, 1, 5000)
	s2.StartTime = t0.Add(6 * time.Hour)
	s2.UpstreamHost, s2.UpstreamPort = "10.0.0.8", 5432
	c.CheckOK(2, s2, at(10), at(11), "10.0.0.3")
	c.CheckOK(3, s2, at(12), at(13), "10.0.0.3")
	if e := c.Elected(); e.Master != nil || c.Cluster() != 0 {
		t.Fatalf("setup: %+v cluster %d", e, c.Cluster())
	}
	r4 := replica("n4", 1, 1, 6000)
	r4.StartTime = t0.Add(4 * time.Hour)
	r4.UpstreamHost, r4.UpstreamPort = "10.0.0.1", 5432
	c.CheckOK(4, r4, at(14), at(15), "10.0.0.4")
	c.CheckOK(1, old, at(16), at(17), "10.0.0.1")
	if e := c.Elected(); e.Master != nil || c.Cluster() != sys || c.Node(2).histTL() != 2 {
		t.Fatalf("setup, cluster learned: %+v cluster %d histTL n2 %d", e, c.Cluster(), c.Node(2).histTL())
	}

	// The name n2 moves back to S1, which streams timeline 1 toward the
	// switch point from n5 (outside the set).
	st := s1
	st.ReceiveTimeline, st.UpstreamHost, st.UpstreamPort = 1, "10.0.0.9", 5432
	for i := 0; i < 10; i++ {
		ms := 100 + 100*i
		c.CheckOK(2, st, at(ms), at(ms+1), "10.0.0.2")
		c.CheckOK(3, s2, at(ms+2), at(ms+3), "10.0.0.3")
		c.CheckOK(4, r4, at(ms+4), at(ms+5), "10.0.0.4")
		c.CheckOK(1, old, at(ms+6), at(ms+7), "10.0.0.1")
	}
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 (core timeline %d, histTL n2 %d): n2 reaches S1 again, the server that showed timeline 2's history file, which streams from outside the set; the proof ended because S2, taken for the file's holder when the cluster was learned, answers at n3",
			e.Master.Addr, c.Timeline(), c.Node(2).histTL())
	}
}
