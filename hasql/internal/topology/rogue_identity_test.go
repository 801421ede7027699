package topology

import (
	"slices"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// A server nothing vouches for (a discovered node) answers first as an
// exact copy of the master's identity (system identifier and postmaster
// start time, plain SQL to read), then as a "restart" of it (a new start
// time), again and again. The trusted master M must not be taken for that
// restarted server (unconfirmed until its next check): it keeps the master
// role, its pool is not reset, no failover is counted.
func TestRogueRestartCopyUnconfirmsMaster(t *testing.T) {
	c := atkCluster(t, false)
	lostMaster, resets, failovers := 0, 0, 0
	ms := 10
	for i := range 5 {
		// The rogue's check: an exact copy of M's identity ...
		copyM := atkMaster()
		c.CheckOK(atkX, copyM, atkAt(ms), atkAt(ms+1), "10.0.0.9")
		// ... then a "restart" of it.
		restarted := atkMaster()
		restarted.StartTime = atkT0.Add(time.Duration(i+1) * time.Second)
		c.CheckOK(atkX, restarted, atkAt(ms+2), atkAt(ms+3), "10.0.0.9")
		if e := c.Elected(); e.Master == nil || e.Master.ID != atkM {
			lostMaster++
		}
		r := c.TakeReady()
		if slices.Contains(r.Reset, atkM) {
			resets++
		}
		for _, rc := range r.RoleChanges {
			if rc.Failover {
				failovers++
			}
		}
		// M's own check (it never changed) gives it back.
		c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(ms+4), atkAt(ms+5), "10.0.0.1")
		r = c.TakeReady()
		for _, rc := range r.RoleChanges {
			if rc.Failover {
				failovers++
			}
		}
		ms += 10
	}
	x := c.Node(atkX)
	t.Logf("rogue: vouched %v role %v; M lost master %d times of 5, its pool reset %d times, %d failovers counted",
		x.Vouched, x.Role, lostMaster, resets, failovers)
	if x.Vouched {
		t.Fatal("setup: the rogue is vouched for")
	}
	if lostMaster > 0 || resets > 0 {
		t.Errorf("a server nothing vouches for took the master's role away %d times (pool reset %d times, %d failovers counted)", lostMaster, resets, failovers)
	}
}

// The master's check times out once (suspect: it keeps the writes until
// the next check confirms), while a server nothing vouches for answers with
// an exact copy of the master's identity: the rogue must not stand for the
// master's server ("prefer a healthy representative" prefers a vouched
// one), and M stays master.
func TestRogueCopyStealsSuspectMaster(t *testing.T) {
	c := atkCluster(t, false)
	c.CheckOK(atkX, atkMaster(), atkAt(10), atkAt(11), "10.0.0.9")
	if e := c.Elected(); e.Master == nil || e.Master.ID != atkM {
		t.Fatalf("setup: master %v", e.Master)
	}
	c.TakeReady()
	c.CheckFailed(atkM, errTimeout{}, true, atkAt(20))
	e := c.Elected()
	m, x := c.Node(atkM), c.Node(atkX)
	r := c.TakeReady()
	t.Logf("M suspect %v aliasOf rogue %v role %v; rogue role %v vouched %v; master %v; M reset %v",
		m.Suspect, m.AliasOf == x, m.Role, x.Role, x.Vouched, e.Master != nil, slices.Contains(r.Reset, atkM))
	if e.Master == nil || e.Master.ID != atkM {
		t.Errorf("a suspect master lost the writes to nobody: a server nothing vouches for that copies its identity stands for it (M is %v)", m.Role)
	}
}

type errTimeout struct{}

func (errTimeout) Error() string { return "timeout" }

// A replica with no name to match it by (no cluster_name, no
// application_name in primary_conninfo: the walsender reports
// "walreceiver") is found among the master's walsenders by its address. A
// discovered member nothing vouches for, on the replica's host with another
// port, that does not even answer, must not make that match a guess: the
// replica stays a replica.
func TestRogueOnReplicaHostDetachesIt(t *testing.T) {
	c := New(Config{})
	c.SetMembers(atkAt(0), []Member{
		{ID: atkM, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: atkR1, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
	})
	rows := atkMaster(atkRow("walreceiver", "10.0.0.2", "async"))
	r1 := atkReplica("", atkR1Start)
	c.CheckOK(atkR1, r1, atkAt(1), atkAt(2), "10.0.0.2")
	c.CheckOK(atkM, rows, atkAt(3), atkAt(4), "10.0.0.1")
	c.CheckOK(atkR1, r1, atkAt(5), atkAt(6), "10.0.0.2")
	if r := c.Node(atkR1).Role; !r.IsReplica() {
		t.Fatalf("setup: r1 is %v (%s)", r, c.Node(atkR1).Detached)
	}
	c.SetMembers(atkAt(7), []Member{
		{ID: atkM, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: atkR1, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
		{ID: atkX, Addr: "10.0.0.2:6543", Host: "10.0.0.2"},
	})
	c.CheckFailed(atkX, errTimeout{}, false, atkAt(8))
	for i := range 3 {
		ms := 10 + 10*i
		c.CheckOK(atkM, rows, atkAt(ms), atkAt(ms+1), "10.0.0.1")
		c.CheckOK(atkR1, r1, atkAt(ms+2), atkAt(ms+3), "10.0.0.2")
		c.CheckFailed(atkX, errTimeout{}, false, atkAt(ms+4))
	}
	x := c.Node(atkR1)
	t.Logf("r1: role %v detached %q", x.Role, x.Detached)
	if !x.Role.IsReplica() {
		t.Errorf("a discovered member nothing vouches for (down, on r1's host) made r1 %v: %s", x.Role, x.Detached)
	}
}

// The system identifier is pinned (42). A host of the connection string
// now answers with a server that does not say its system identifier (NULL:
// 0) and is writable. A server of any other cluster is foreign, whatever
// it claims (docs/security.md), and so is one that claims none: no split
// brain, M stays master.
func TestPinnedSystemIDUnknownIsNotForeign(t *testing.T) {
	c := New(Config{SystemID: 42})
	c.SetMembers(atkAt(0), []Member{
		{ID: atkM, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: atkR1, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
		{ID: atkX, Addr: "10.0.0.9:5432", Host: "10.0.0.9", Trusted: true},
	})
	c.CheckOK(atkR1, atkReplica("r1", atkR1Start), atkAt(1), atkAt(2), "10.0.0.2")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(3), atkAt(4), "10.0.0.1")
	nosys := atkMaster()
	nosys.SystemID, nosys.StartTime = 0, atkT0.Add(-5*time.Hour)
	c.CheckOK(atkX, nosys, atkAt(5), atkAt(6), "10.0.0.9")
	e := c.Elected()
	x := c.Node(atkX)
	t.Logf("master %v split %v; X role %v detached %q", e.Master != nil, e.SplitBrain, x.Role, x.Detached)
	if e.Master == nil || e.Master.ID != atkM {
		t.Errorf("with the system identifier pinned, a writable server that hides its own took the writes away (split brain %v)", e.SplitBrain)
	}
}

// The same with the master down: the server that hides its system
// identifier must not become the master of the pinned cluster.
func TestPinnedSystemIDUnknownTakesWrites(t *testing.T) {
	c := New(Config{SystemID: 42})
	c.SetMembers(atkAt(0), []Member{
		{ID: atkM, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: atkR1, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
		{ID: atkX, Addr: "10.0.0.9:5432", Host: "10.0.0.9", Trusted: true},
	})
	c.CheckOK(atkR1, atkReplica("r1", atkR1Start), atkAt(1), atkAt(2), "10.0.0.2")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(3), atkAt(4), "10.0.0.1")
	c.CheckFailed(atkM, errTimeout{}, false, atkAt(5))
	nosys := atkMaster()
	nosys.SystemID, nosys.StartTime = 0, atkT0.Add(-5*time.Hour)
	c.CheckOK(atkX, nosys, atkAt(6), atkAt(7), "10.0.0.9")
	e := c.Elected()
	if e.Master != nil && e.Master.ID == atkX {
		t.Errorf("with the system identifier pinned to 42, a server that does not say its own is elected master")
	}
}

// Held: two rogues vouch for each other (W writable lists R, R streams from
// W on W's timeline of cluster 42, timeline 3): neither is vouched, M stays
// master, no timeline is raised.
func TestRoguesVouchForEachOther(t *testing.T) {
	c := New(Config{})
	const w, r ID = 7, 8
	c.SetMembers(atkAt(0), []Member{
		{ID: atkM, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: atkR1, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
		{ID: w, Addr: "10.0.0.8:5432", Host: "10.0.0.8"},
		{ID: r, Addr: "10.0.0.9:5432", Host: "10.0.0.9"},
	})
	c.CheckOK(atkR1, atkReplica("r1", atkR1Start), atkAt(1), atkAt(2), "10.0.0.2")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(3), atkAt(4), "10.0.0.1")
	wres := atkMaster(atkRow("rr", "10.0.0.9", "sync"))
	wres.Timeline, wres.StartTime, wres.LSN = 3, atkT0.Add(-7*time.Hour), 1<<30
	rres := atkReplica("rr", atkT0.Add(-8*time.Hour))
	rres.Timeline, rres.ReceiveTimeline, rres.UpstreamHost, rres.LSN, rres.ReceiveLSN = 3, 3, "10.0.0.8", 1<<30, 1<<30
	for i := range 3 {
		ms := 10 + 10*i
		c.CheckOK(r, rres, atkAt(ms), atkAt(ms+1), "10.0.0.9")
		c.CheckOK(w, wres, atkAt(ms+2), atkAt(ms+3), "10.0.0.8")
		c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(ms+4), atkAt(ms+5), "10.0.0.1")
		c.CheckOK(atkR1, atkReplica("r1", atkR1Start), atkAt(ms+6), atkAt(ms+7), "10.0.0.2")
	}
	e := c.Elected()
	if e.Master == nil || e.Master.ID != atkM || c.Timeline() != 1 || c.Node(w).Vouched || c.Node(r).Vouched {
		t.Errorf("master %v timeline %d W vouched %v R vouched %v", e.Master, c.Timeline(), c.Node(w).Vouched, c.Node(r).Vouched)
	}
	if c.Node(atkR1).Role != RoleSyncReplica {
		t.Errorf("r1 is %v", c.Node(atkR1).Role)
	}
}

// Held: before the first master is confirmed (unpinned, nothing checked
// yet), a discovered rogue answers first: writable on timeline 5 of M's
// system identifier, listing r1 from r1's address. It defines no cluster,
// raises no timeline, and M is master once checked.
func TestRogueBeforeFirstMaster(t *testing.T) {
	c := New(Config{})
	c.SetMembers(atkAt(0), atkMembers(true))
	rogue := atkMaster(atkRow("r1", "10.0.0.2", "sync"))
	rogue.Timeline, rogue.StartTime, rogue.LSN = 5, atkT0.Add(-9*time.Hour), 1<<30
	c.CheckOK(atkX, rogue, atkAt(1), atkAt(2), "10.0.0.9")
	if e := c.Elected(); e.Master != nil || c.Cluster() != 0 || c.Timeline() != 0 {
		t.Fatalf("after the rogue alone: master %v cluster %d timeline %d", e.Master, c.Cluster(), c.Timeline())
	}
	c.CheckOK(atkR1, atkReplica("r1", atkR1Start), atkAt(3), atkAt(4), "10.0.0.2")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(5), atkAt(6), "10.0.0.1")
	c.CheckOK(atkX, rogue, atkAt(7), atkAt(8), "10.0.0.9")
	e := c.Elected()
	if e.Master == nil || e.Master.ID != atkM || c.Timeline() != 1 || c.Cluster() != 42 {
		t.Errorf("master %v timeline %d cluster %d", e.Master, c.Timeline(), c.Cluster())
	}
}

// With the system identifier pinned, a replica that does not say its own
// serves no reads, even listed by the master's walsenders under its name:
// any server could stand behind it.
func TestPinnedSystemIDUnknownReplicaServesNoReads(t *testing.T) {
	c := New(Config{SystemID: 42})
	c.SetMembers(atkAt(0), []Member{
		{ID: atkM, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: atkR1, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
	})
	r1 := atkReplica("r1", atkR1Start)
	c.CheckOK(atkR1, r1, atkAt(1), atkAt(2), "10.0.0.2")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(3), atkAt(4), "10.0.0.1")
	if r := c.Node(atkR1).Role; !r.IsReplica() {
		t.Fatalf("setup: r1 is %v (%s)", r, c.Node(atkR1).Detached)
	}
	r1.SystemID = 0
	c.CheckOK(atkR1, r1, atkAt(5), atkAt(6), "10.0.0.2")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(7), atkAt(8), "10.0.0.1")
	if x := c.Node(atkR1); x.Role.IsReplica() {
		t.Errorf("a replica that hides its system identifier serves reads while the cluster's is pinned (%v)", x.Role)
	} else if x.Detached == "" {
		t.Errorf("r1 is %v with no reason given", x.Role)
	}
}

// A member found by discovery on a replica's host (another port) that the
// checks cannot reach, and nothing vouches for, streams from the master as
// "x". Our replica r1, on that host, has lost its walreceiver: the row
// named x is not r1's, whatever its address, and r1 serves no reads.
func TestDownMemberOnReplicaHostLendsNoRow(t *testing.T) {
	c := New(Config{})
	c.SetMembers(atkAt(0), []Member{
		{ID: atkM, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: atkR1, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
		{ID: atkX, Addr: "10.0.0.2:6543", Host: "10.0.0.2"},
	})
	rows := atkMaster(atkRow("x", "10.0.0.2", "sync"))
	r1 := checker.Result{InRecovery: true, ReadOnly: true, Timeline: 1, LSN: 100,
		Name: "r1", SystemID: 42, StartTime: atkR1Start}
	for i := range 4 {
		ms := 10 * i
		c.CheckFailed(atkX, errTimeout{}, false, atkAt(ms+1))
		c.CheckOK(atkR1, r1, atkAt(ms+2), atkAt(ms+3), "10.0.0.2")
		c.CheckOK(atkM, rows, atkAt(ms+4), atkAt(ms+5), "10.0.0.1")
	}
	if e := c.Elected(); e.Master == nil || e.Master.ID != atkM {
		t.Fatalf("setup: master %v", e.Master)
	}
	if n := c.Node(atkR1); n.Role.IsReplica() {
		t.Errorf("r1, in no walsender row, is %v: it took x's row (same host, x down and unvouched) by its address", n.Role)
	}
}
