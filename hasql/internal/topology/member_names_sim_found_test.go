package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// Found by TestSimulationMemberNames (seed 91). The master answers at two
// addresses of the connection string (its own and a name that reaches it
// too): node 1 stands for the server, node 2 is its alias. The source
// names node 1 in place. The master stays the master through node 1: a
// member the user named is vouched for under any name, and the address
// that stood for the server does not yield to the other one (which would
// move the application's writes to another pool for nothing).
func TestRenamedMasterKeepsStandingForItsServer(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{
		{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: 2, Addr: "10.0.0.9:5432", Host: "10.0.0.9", Trusted: true},
	})
	m := master(1, 100)
	for round := 0; round < 2; round++ {
		c.CheckOK(1, m, at(1000*round+1), at(1000*round+2), "10.0.0.1")
		c.CheckOK(2, m, at(1000*round+1), at(1000*round+3), "10.0.0.1")
	}
	c.TakeReady()
	if e := c.Elected().Master; e == nil || e.ID != 1 || c.Node(2).AliasOf == nil {
		t.Fatalf("start: master %+v, node 2 alias of %v", e, c.Node(2).AliasOf)
	}
	c.SetMembers(at(2500), []Member{
		{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Name: "n1", Trusted: true},
		{ID: 2, Addr: "10.0.0.9:5432", Host: "10.0.0.9", Trusted: true},
	})
	r := c.TakeReady()
	if e := c.Elected().Master; e == nil {
		t.Errorf("no master once the source named it")
	} else if e.ID != 1 {
		t.Errorf("the master's address yielded to another of its server when the source named it: master %v", e.Addr)
	}
	if len(r.Cut) != 0 {
		t.Errorf("naming the master cut %v", r.Cut)
	}
}

// Found by TestSimulationMemberNames (seed 621024383). A discovered
// member at 10.0.0.3, named n2 by a source that is behind (the address
// reached n2 when it named it; the server there now streams as n4), is
// vouched for: the master lists it from its own address, under the name
// its server streams as. The master's row named n2, sync, comes from n2's
// machine, whose member left the set. Once vouched, the member's row is
// found by the name its own walreceiver shows, as for a member the user
// named: the stale name does not make it sync.
func TestVouchedMemberWithAStaleNameTakesNoRowByIt(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{
		{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: 3, Addr: "10.0.0.3:5432", Host: "10.0.0.3", Name: "n2"},
	})
	m := master(1, 100)
	m.Replicas = []checker.Replica{
		{ApplicationName: "n2", SyncState: "sync", ClientAddr: "10.0.0.2", State: "streaming"},
		{ApplicationName: "n4", SyncState: "async", ClientAddr: "10.0.0.3", State: "streaming"},
	}
	n4 := replica("n4", 1, 1, 100)
	n4.StartTime = t0.Add(30 * time.Second)
	n4.UpstreamHost, n4.UpstreamPort = "10.0.0.1", 5432
	for round := 0; round < 3; round++ {
		base := 1000 * round
		c.CheckOK(1, m, at(base+1), at(base+2), "10.0.0.1")
		c.CheckOK(3, n4, at(base+3), at(base+4), "10.0.0.3")
	}
	c.TakeReady()
	if e := c.Elected().Master; e == nil || e.ID != 1 {
		t.Fatalf("master %+v", c.Elected())
	}
	x := c.Node(3)
	t.Logf("node 3 (named n2, streams as n4): role %s vouched %v sync %q detached %q", x.Role, x.Vouched, x.SyncState, x.Detached)
	if x.Role == RoleSyncReplica {
		t.Errorf("a member whose source name is behind took that name's sync row (from another machine)")
	}
}
