package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// Replica n2, a host of the connection string, streams from the master
// n1, sync. A server nothing vouches for listens on n2's machine
// (10.0.0.2:5433, a member the source lists) and says it is a replica
// streaming from n1 as n2: the master's row n2 comes from that machine,
// and while n2's checks show it streaming the row is n2's as much as the
// newcomer's. n2's walreceiver restarts (a network blip, the master's
// wal_sender_timeout): one check of n2 finds none, and the master's read
// just after shows the row n2 again, n2's walreceiver back. The
// newcomer is not vouched for by that row, nor sync: vouched, it would
// keep it for as long as its server runs, and its claim of a promotion
// would make it the master, taking the writes.
func TestServerBesideAReplicaTakesNoRowWhileTheReplicasWalreceiverRestarts(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{
		{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
		{ID: 3, Addr: "10.0.0.2:5433", Host: "10.0.0.2"},
	})
	m := master(1, 100)
	m.Replicas = []checker.Replica{{ApplicationName: "n2", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "sync"}}
	n2 := replica("n2", 1, 1, 100)
	n2.StartTime = t0.Add(20 * time.Second)
	n2.UpstreamHost, n2.UpstreamPort = "10.0.0.1", 5432
	restarting := n2
	restarting.ReceiveTimeline, restarting.UpstreamHost, restarting.UpstreamPort = 0, "", 0
	other := n2
	other.StartTime = t0.Add(40 * time.Second)

	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, n2, at(3), at(4), "10.0.0.2")
	c.CheckOK(3, other, at(3), at(4), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(3); x.Vouched || x.Role.IsReplica() {
		t.Fatalf("setup: the newcomer beside n2 is %s, vouched %v; want detached", x.Role, x.Vouched)
	}
	c.CheckOK(2, restarting, at(1000), at(1001), "10.0.0.2")
	c.CheckOK(3, other, at(1000), at(1001), "10.0.0.2")
	c.CheckOK(1, m, at(1002), at(1003), "10.0.0.1")
	c.TakeReady()
	if x := c.Node(3); x.Vouched || x.Role.IsReplica() {
		t.Errorf("while n2's walreceiver restarted, the newcomer beside it took its row: %s (sync state %q), vouched %v", x.Role, x.SyncState, x.Vouched)
	}
	c.CheckOK(2, n2, at(2000), at(2001), "10.0.0.2")
	c.CheckOK(1, m, at(2002), at(2003), "10.0.0.1")
	promoted := rcWritable("n2", 2, 200, other.StartTime)
	for k := 0; k < 3; k++ {
		base := 3000 + 1000*k
		c.CheckOK(3, promoted, at(base), at(base+1), "10.0.0.2")
		c.CheckOK(1, m, at(base+2), at(base+3), "10.0.0.1")
		c.CheckOK(2, n2, at(base+2), at(base+3), "10.0.0.2")
	}
	c.TakeReady()
	requireNewcomerTookNoWrites(t, c, 1, 3)
}
