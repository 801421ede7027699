package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// Replica n2, a host of the connection string (10.0.0.2), leaves the set
// for a while (its Patroni member key expired while its agent was down;
// PostgreSQL streamed on). Meanwhile a server nothing vouches for on n2's
// machine (10.0.0.2:5433, a member the source lists) says it is a
// replica streaming as n2: the master's row n2 from that machine is all
// there is to go by, and it is vouched for by it (a replica outside the
// set is the one documented limit). n2 comes back into the set, streaming
// as n2 from the master: the row of that name from that machine is a
// node's the user named, and the newcomer's word is all that says it is
// its own. It is vouched for no more: it serves no reads, and its claim
// of a promotion takes no writes.
func TestServerBesideAReplicaBackInTheSetIsVouchedForNoMore(t *testing.T) {
	n2 := streamingN2()
	other := n2
	other.StartTime = t0.Add(40 * time.Second)
	c, m1, m, beside := besideWhileOut(other)
	c.TakeReady()
	if x := c.Node(3); !x.Vouched {
		t.Logf("the newcomer was not vouched for while n2 was out of the set (%s)", x.Role)
	}

	c.SetMembers(at(2000), []Member{m1, {ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true}, beside})
	for k := 0; k < 2; k++ {
		base := 3000 + 1000*k
		c.CheckOK(2, n2, at(base), at(base+1), "10.0.0.2")
		c.CheckOK(3, other, at(base), at(base+1), "10.0.0.2")
		c.CheckOK(1, m, at(base+2), at(base+3), "10.0.0.1")
	}
	c.TakeReady()
	if x := c.Node(3); x.Vouched || x.Role.IsReplica() {
		t.Errorf("n2 back in the set: the newcomer beside it is %s (sync state %q), vouched %v; want detached", x.Role, x.SyncState, x.Vouched)
	}
	promoted := rcWritable("n2", 2, 200, other.StartTime)
	for k := 0; k < 3; k++ {
		base := 6000 + 1000*k
		c.CheckOK(3, promoted, at(base), at(base+1), "10.0.0.2")
		c.CheckOK(2, n2, at(base), at(base+1), "10.0.0.2")
		c.CheckOK(1, m, at(base+2), at(base+3), "10.0.0.1")
	}
	c.TakeReady()
	requireNewcomerTookNoWrites(t, c, 1, 3)
}

// streamingN2 is replica n2 streaming from n1 (10.0.0.1).
func streamingN2() checker.Result {
	n2 := replica("n2", 1, 1, 100)
	n2.StartTime = t0.Add(20 * time.Second)
	n2.UpstreamHost, n2.UpstreamPort = "10.0.0.1", 5432
	return n2
}

// besideWhileOut is the set while n2 is out of it: master n1 (its member
// m1 and its check m, whose row n2 comes from n2's machine, sync) and
// beside, a member nothing vouches for at another port of n2's machine
// (ID 3), checked twice with newcomer as its result.
func besideWhileOut(newcomer checker.Result) (c *Core, m1 Member, m checker.Result, beside Member) {
	c = New(Config{})
	m1 = Member{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true}
	beside = Member{ID: 3, Addr: "10.0.0.2:5433", Host: "10.0.0.2"}
	c.SetMembers(at(0), []Member{m1, beside})
	m = master(1, 100)
	m.Replicas = []checker.Replica{{ApplicationName: "n2", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "sync"}}
	for k := 0; k < 2; k++ {
		base := 1000 * k
		c.CheckOK(3, newcomer, at(base+1), at(base+2), "10.0.0.2")
		c.CheckOK(1, m, at(base+3), at(base+4), "10.0.0.1")
	}
	return c, m1, m, beside
}

// requireNewcomerTookNoWrites fails t unless node want is the elected
// master, newcomer's claim of a promotion taking no writes.
func requireNewcomerTookNoWrites(t *testing.T, c *Core, want, newcomer ID) {
	t.Helper()
	if e := c.Elected().Master; e == nil || e.ID != want {
		master := "none"
		if e != nil {
			master = e.Addr
		}
		t.Errorf("the newcomer claimed a promotion: master %s, newcomer %s (vouched %v); want n%d the master", master, c.Node(newcomer).Role, c.Node(newcomer).Vouched, want)
	}
}
