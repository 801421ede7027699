package topology

import (
	"errors"
	"testing"
	"time"
)

// Found by the simulation (go test -run '^TestSimulation$'
// ./hasql/internal/topology/ -args -sim.seed=7035409 -sim.schedules=1:
// "replica 10.0.0.5:5432 claimed sync with 0 walsender rows of its
// name"), made direct here.
//
// A name (10.0.0.3) reaches the sync replica n2 beside n2's own address:
// node 3 is an alias of node 2. The master hangs (one timeout: suspect,
// still master). The name moves to n3, a replica with no walreceiver
// (its upstream is the hung master) that the master's walsenders never
// listed. dedup keeps node 3 an alias of node 2 (the exception for a
// restarted replica whose walreceiver has not started: in recovery, no
// walreceiver, the check user has pg_monitor, node 2 not checked since),
// and node 3 takes node 2's role: sync. Then node 2's check changes
// nothing others depend on: rebuild(only=node 2). dedup drops node 3's
// alias (node 2 was checked since), but only node 2 is derived again:
// node 3, now a node of its own that reaches n3, keeps the role "sync"
// it copied as an alias, and the shell routes reads (sync ones too) to it.
func TestDroppedAliasIsDerivedAgain(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	m := master(1, 1000, "n2")
	m.Replicas[0].SyncState = "sync"
	n2 := replica("n2", 1, 1, 1000)
	n2.UpstreamHost, n2.UpstreamPort = "10.0.0.1", 5432
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, n2, at(3), at(4), "10.0.0.2")
	c.CheckOK(3, n2, at(3), at(5), "10.0.0.2") // the name reaches n2 too
	c.TakeReady()
	if x := c.Node(3); x.AliasOf == nil || x.AliasOf.ID != 2 || c.Node(2).Role != RoleSyncReplica {
		t.Fatalf("start: node 3 alias of %v, node 2 role %s", x.AliasOf, c.Node(2).Role)
	}
	// The master hangs: suspect, still master.
	c.CheckFailed(1, errors.New("timeout"), true, at(100))
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("a suspect master stays master: %+v", e)
	}
	// The name 10.0.0.3 moves to n3: another server, never listed by the
	// master, no walreceiver (its upstream hangs).
	n3 := replica("n3", 1, 0, 1100)
	n3.StartTime = t0.Add(-time.Hour)
	c.CheckOK(3, n3, at(200), at(201), "10.0.0.4")
	// n2's next check: nothing changed.
	c.CheckOK(2, n2, at(202), at(203), "10.0.0.2")
	c.TakeReady()
	x := c.Node(3)
	if x.AliasOf == nil && (x.Role == RoleSyncReplica || x.Role == RoleQuorumReplica) {
		t.Fatalf("node 3 reaches n3, which the master's walsenders do not list (rows: %+v), and is no alias: role %s, sync state %q",
			c.Elected().Master.Res.Replicas, x.Role, x.SyncState)
	}
	if x.AliasOf == nil && x.Role.IsReplica() {
		t.Fatalf("node 3 reaches n3, not listed by the master, and is no alias: it serves reads as %s", x.Role)
	}
}

// The same, with n3 behind the master: the node also keeps node 2's lag,
// 0 and known, for a server 600 bytes behind.
func TestDroppedAliasKeepsNoCopiedLag(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	m := master(1, 1000, "n2")
	m.Replicas[0].SyncState = "sync"
	m.Replicas[0].ReplayLSN = 1000
	n2 := replica("n2", 1, 1, 1000)
	n2.UpstreamHost, n2.UpstreamPort = "10.0.0.1", 5432
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, n2, at(3), at(4), "10.0.0.2")
	c.CheckOK(3, n2, at(3), at(5), "10.0.0.2")
	n3 := replica("n3", 1, 0, 400)
	n3.StartTime = t0.Add(-time.Hour)
	c.CheckOK(3, n3, at(200), at(201), "10.0.0.4")
	c.CheckOK(2, n2, at(202), at(203), "10.0.0.2")
	c.TakeReady()
	x := c.Node(3)
	if x.AliasOf == nil && x.Role.IsReplica() && x.LagKnown && x.LagBytes == 0 {
		t.Fatalf("node 3 reaches n3 at 0/190, the master at 0/3E8: role %s, lag %d bytes known %v", x.Role, x.LagBytes, x.LagKnown)
	}
}

// Lag with no master: a replica keeps no known lag, and an alias copies
// the unknown.
func TestAliasLagUnknownWithNoMaster(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	c.CheckOK(1, master(1, 1000, "n2"), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 1000), at(3), at(4), "10.0.0.2")
	c.CheckOK(3, replica("n2", 1, 1, 1000), at(3), at(5), "10.0.0.2")
	if x := c.Node(3); x.AliasOf == nil || !x.LagKnown {
		t.Fatalf("alias %v lag known %v", x.AliasOf, x.LagKnown)
	}
	c.CheckFailed(1, errors.New("connection refused"), false, at(10))
	for _, id := range []ID{2, 3} {
		if x := c.Node(id); x.LagKnown {
			t.Fatalf("node %d: lag known with no master", id)
		}
	}
}

// Two replicas cloned from one base backup whose postmasters started in the
// same microsecond show one identity (system identifier and start time):
// under different names they are two servers, not one under two
// addresses. Seen in a test cluster whose replicas start together: the
// second was an alias of the first, with its role, and a Manager that
// wanted a replica beside the master never had one.
func TestOneIdentityTwoNamesIsTwoServers(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	m := master(1, 1000, "n2", "n3")
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	n2 := replica("n2", 1, 1, 1000)
	n3 := replica("n3", 1, 1, 1000)
	n3.StartTime = n2.StartTime // the same microsecond
	c.CheckOK(2, n2, at(3), at(4), "10.0.0.2")
	c.CheckOK(3, n3, at(5), at(6), "10.0.0.3")
	for id := ID(2); id <= 3; id++ {
		if x := c.Node(id); x.AliasOf != nil || !x.Role.IsReplica() {
			t.Errorf("node %d: alias of %v, role %s: want a replica of its own", id, x.AliasOf, x.Role)
		}
	}
}
