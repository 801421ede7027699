package topology

import (
	"errors"
	"testing"
	"time"
)

// TestReplicaStreamingFromOutsideTheSetKeepsTheProof, with n2 restarted
// between showing the file and streaming timeline 1 toward the switch
// point from 10.0.0.9 (the newer timeline's master, outside the set).
// histLeftOver's "another server answers at x" branch takes n2's own
// restart (a new postmaster start time: another ServerID) for a name that
// moved, and drops the proof with no streaming evidence at all.
func TestRestartedReplicaKeepsTheProof(t *testing.T) {
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
	// n2 restarts (pg_ctl restart, OOM kill); it streams timeline 1
	// toward the switch point from 10.0.0.9, as in the original test.
	r := replica("n2", 1, 1, 4500)
	r.StartTime = t0.Add(3 * time.Hour)
	r.HistoryTimeline = 2
	r.UpstreamHost, r.UpstreamPort = "10.0.0.9", 5432
	c.CheckOK(2, r, at(10), at(11), "10.0.0.2")
	c.CheckOK(1, old, at(14), at(15), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 (core timeline %d) while n2, which holds timeline 2's history file and only restarted, streams from 10.0.0.9, not n1 and not in the set",
			e.Master.Addr, c.Timeline())
	}
}

// Control: the same without the restart holds (the shipped test).
func TestReplicaStreamingFromOutsideKeepsTheProofWithoutARestart(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	old := master(1, 6000)
	old.StartTime = t0.Add(time.Hour)
	c.CheckOK(1, old, at(1), at(2), "10.0.0.1")
	h := replica("n2", 1, 0, 4000)
	h.HistoryTimeline = 2
	c.CheckOK(2, h, at(1), at(3), "10.0.0.2")
	c.CheckOK(1, old, at(5), at(6), "10.0.0.1")
	r := replica("n2", 1, 1, 4500)
	r.HistoryTimeline = 2
	r.UpstreamHost, r.UpstreamPort = "10.0.0.9", 5432
	c.CheckOK(2, r, at(10), at(11), "10.0.0.2")
	c.CheckOK(1, old, at(14), at(15), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("control: %s elected", e.Master.Addr)
	}
}

// histLeftOver's "another server answers at x" branch assumes "the server
// that holds the file shows it again wherever it is checked": it is not
// checked anywhere when only the moved name reached it. The set is n1 and
// node 3, a name (VIP / DNS) the user put in the DSN. While n1 restarts
// the name reaches n2, a replica not otherwise in the set, past the fork
// point of a promotion of n4 (outside the set, the one that now takes
// writes): no walreceiver, 00000002.history. The name then moves back to
// n1 (timeline 1, its old master, running on): the proof is dropped and n1
// is elected on timeline 1 while n4 is master on timeline 2.
func TestNameMovedOffTheFileHolderKeepsTheProof(t *testing.T) {
	c := New(Config{})
	mb := members(3)
	c.SetMembers(at(0), []Member{mb[0], mb[2]})
	m := master(1, 1000)
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(3, m, at(3), at(4), "10.0.0.1")
	c.TakeReady()
	refused := errors.New("connection refused")
	c.CheckFailed(1, refused, false, at(100))
	c.CheckFailed(3, refused, false, at(101))
	h := replica("n2", 1, 0, 1500) // past n4's fork point; file fetched from n4
	h.StartTime = t0.Add(2 * time.Hour)
	h.HistoryTimeline = 2
	c.CheckOK(3, h, at(110), at(111), "10.0.0.2")
	if e := c.Elected(); e.Master != nil || c.Timeline() != 2 {
		t.Fatalf("setup: %+v timeline %d", e, c.Timeline())
	}
	back := m
	back.StartTime = t0.Add(time.Hour)
	back.LSN = 1600
	c.CheckOK(1, back, at(200), at(201), "10.0.0.1")
	c.CheckOK(3, back, at(202), at(203), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 (core timeline %d): the only server that showed timeline 2's history file is no longer checked at any address, and nothing showed the file left over",
			e.Master.Addr, c.Timeline())
	}
}

// docs/roles.md: a history file fetched from an upstream the replica
// could not follow (a promotion abandoned, out of the set) "keeps an older
// master stale until it streams again". n2 holds 00000002.history from
// such a promotion, then streams timeline 1 again, cascading from n3 (a
// replica of n1, listed by n1) rather than from n1 itself. Every node
// answers, faults are over, nothing anywhere is on timeline 2: n1 stays
// stale for good (histLeftOver wants n2 to stream from, or be listed by,
// a writable node).
func TestCascadedReplicaEndsALeftoverProof(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	m := master(1, 1000, "n3")
	r3 := replica("n3", 1, 1, 1000)
	r3.StartTime = t0.Add(3 * time.Hour)
	r3.UpstreamHost, r3.UpstreamPort = "10.0.0.1", 5432
	r2 := replica("n2", 1, 1, 1000)
	r2.StartTime = t0.Add(2 * time.Hour)
	r2.UpstreamHost, r2.UpstreamPort = "10.0.0.3", 5432
	r3.Replicas = master(1, 1000, "n2").Replicas // n3's walsender serves n2
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(3, r3, at(3), at(4), "10.0.0.3")
	c.CheckOK(2, r2, at(5), at(6), "10.0.0.2")
	c.TakeReady()
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("start: %+v", e)
	}
	// n2's walreceiver down for a moment; it shows the abandoned
	// promotion's file.
	h := r2
	h.ReceiveTimeline, h.UpstreamHost, h.UpstreamPort, h.HistoryTimeline = 0, "", 0, 2
	c.CheckOK(2, h, at(100), at(101), "10.0.0.2")
	for i := 0; i < 50; i++ {
		ms := 1000 + 500*i
		c.CheckOK(1, m, at(ms), at(ms+1), "10.0.0.1")
		c.CheckOK(3, r3, at(ms+2), at(ms+3), "10.0.0.3")
		c.CheckOK(2, r2, at(ms+4), at(ms+5), "10.0.0.2")
	}
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("25 s after n2 streams timeline 1 again (from n3, which follows n1), every node answering, nothing on timeline 2: %+v (histTL n2 %d, core timeline %d)",
			e, c.Node(2).histTL(), c.Timeline())
	}
}

// ForgetTimeline is "the operator's way out of a stale master that is to
// take writes again": it forgets the newest timeline seen and derives it
// again "from what the nodes report now". While the cluster is not learned
// (here a tie: the DSN names a server of another cluster beside n1), the
// pre-cluster records (preTL / preHist) of a node that is down are not
// forgotten: newestOf keeps n1 stale after ForgetTimeline, for as long as
// n3 stays down.
func TestForgetTimelineForgetsPreClusterRecords(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	c.CheckOK(1, master(1, 9000), at(1), at(2), "10.0.0.1")
	foreign := replica("n2", 7, 7, 100)
	foreign.SystemID = sys + 1
	foreign.StartTime = t0.Add(5 * time.Hour)
	r := replica("n3", 2, 2, 8000)
	r.StartTime = t0.Add(6 * time.Hour)
	r.UpstreamHost, r.UpstreamPort = "10.0.0.9", 5432
	c.CheckOK(3, r, at(1), at(4), "10.0.0.3") // n2's first check under way
	c.CheckFailed(3, errors.New("connection refused"), false, at(10))
	c.CheckOK(2, foreign, at(1), at(11), "10.0.0.2")
	c.CheckOK(1, master(1, 9100), at(11), at(12), "10.0.0.1")
	if e := c.Elected(); e.Master != nil || c.Cluster() != 0 {
		t.Fatalf("setup: %+v cluster %d", e, c.Cluster())
	}
	c.ForgetTimeline(at(20))
	for i := 0; i < 10; i++ {
		ms := 100 + 100*i
		c.CheckOK(1, master(1, 9200), at(ms), at(ms+1), "10.0.0.1")
		c.CheckOK(2, foreign, at(ms+2), at(ms+3), "10.0.0.2")
		c.CheckFailed(3, errors.New("connection refused"), false, at(ms+4))
	}
	if e := c.Elected(); e.Master == nil {
		t.Fatalf("after ForgetTimeline, n1 (the only writable node of its system identifier) is still not master: %+v (cluster %d, core timeline %d, newestOf %d)",
			e, c.Cluster(), c.Timeline(), c.newestOf(sys))
	}
}
