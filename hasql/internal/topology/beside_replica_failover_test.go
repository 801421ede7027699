package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// Replica n2, a host of the connection string, streams from the master
// n1 on timeline 1, sync. A server nothing vouches for listens on n2's
// machine (10.0.0.2:5433, a member the source lists) and says it is a
// replica named n2. n1 fails and n3 is promoted to timeline 2; n2's check
// still shows timeline 1 (its walreceiver has not switched yet) when n3's
// walsenders already list n2 from that machine, and the newcomer says it
// streams timeline 2 from n3 as n2. The row is n2's as much as the
// newcomer's: the newcomer is not vouched for by it, nor sync, and its
// claim of a promotion later takes no writes.
func TestServerBesideAReplicaTakesNoRowInAFailover(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{
		{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
		{ID: 3, Addr: "10.0.0.3:5432", Host: "10.0.0.3", Trusted: true},
		{ID: 4, Addr: "10.0.0.2:5433", Host: "10.0.0.2"},
	})
	m := master(1, 100)
	m.Replicas = []checker.Replica{
		{ApplicationName: "n2", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "sync"},
		{ApplicationName: "n3", ClientAddr: "10.0.0.3", State: "streaming", SyncState: "potential"},
	}
	rep := func(name string, tl uint32, upstream string, start time.Duration) checker.Result {
		r := replica(name, tl, tl, 100)
		r.StartTime = t0.Add(start)
		r.UpstreamHost, r.UpstreamPort = upstream, 5432
		return r
	}
	n2, n3 := rep("n2", 1, "10.0.0.1", 20*time.Second), rep("n3", 1, "10.0.0.1", 30*time.Second)
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, n2, at(3), at(4), "10.0.0.2")
	c.CheckOK(3, n3, at(3), at(4), "10.0.0.3")
	c.CheckOK(4, rep("n2", 1, "10.0.0.1", 40*time.Second), at(3), at(4), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(4); x.Vouched || x.Role.IsReplica() {
		t.Fatalf("setup: the newcomer beside n2 is %s, vouched %v; want detached", x.Role, x.Vouched)
	}

	c.CheckFailed(1, errTimeout{}, false, at(1000))
	c.CheckOK(2, n2, at(1001), at(1002), "10.0.0.2")
	c.CheckOK(4, rep("n2", 2, "10.0.0.3", 40*time.Second), at(1001), at(1002), "10.0.0.2")
	promoted := rcWritable("n3", 2, 300, n3.StartTime,
		checker.Replica{ApplicationName: "n2", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "sync"})
	c.CheckOK(3, promoted, at(1003), at(1004), "10.0.0.3")
	c.CheckOK(3, promoted, at(1100), at(1101), "10.0.0.3")
	c.TakeReady()
	if e := c.Elected().Master; e == nil || e.ID != 3 {
		t.Fatalf("after the failover: master %+v; want n3", c.Elected())
	}
	if x := c.Node(4); x.Vouched || x.Role.IsReplica() {
		t.Errorf("in the failover, the newcomer beside n2 took its row at the new master: %s (sync state %q), vouched %v", x.Role, x.SyncState, x.Vouched)
	}

	c.CheckOK(2, rep("n2", 2, "10.0.0.3", 20*time.Second), at(2001), at(2002), "10.0.0.2")
	for k := 0; k < 3; k++ {
		base := 3000 + 1000*k
		c.CheckOK(4, rcWritable("n2", 3, 400, t0.Add(40*time.Second)), at(base), at(base+1), "10.0.0.2")
		c.CheckOK(3, promoted, at(base+2), at(base+3), "10.0.0.3")
		c.CheckOK(2, rep("n2", 2, "10.0.0.3", 20*time.Second), at(base+2), at(base+3), "10.0.0.2")
	}
	c.TakeReady()
	requireNewcomerTookNoWrites(t, c, 3, 4)
}
