package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// As TestServerBesideAReplicaBackInTheSetIsVouchedForNoMore, but the
// server beside n2 copies n2's identity too (system identifier and start
// time are plain SQL to read): once n2 is back in the set, the newcomer
// is taken for another address of n2's server. It is vouched for no
// more all the same: it does not stand for n2 when n2's checks time out,
// and its claim of a promotion takes no writes.
func TestServerBesideAReplicaCopyingItsIdentityIsVouchedForNoMore(t *testing.T) {
	c := New(Config{})
	m1 := Member{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true}
	beside := Member{ID: 3, Addr: "10.0.0.2:5433", Host: "10.0.0.2"}
	c.SetMembers(at(0), []Member{m1, beside})
	m := master(1, 100)
	m.Replicas = []checker.Replica{{ApplicationName: "n2", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "sync"}}
	n2 := replica("n2", 1, 1, 100)
	n2.StartTime = t0.Add(20 * time.Second)
	n2.UpstreamHost, n2.UpstreamPort = "10.0.0.1", 5432
	for k := 0; k < 2; k++ {
		base := 1000 * k
		c.CheckOK(3, n2, at(base+1), at(base+2), "10.0.0.2")
		c.CheckOK(1, m, at(base+3), at(base+4), "10.0.0.1")
	}
	c.SetMembers(at(2000), []Member{m1, {ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true}, beside})
	for k := 0; k < 2; k++ {
		base := 3000 + 1000*k
		c.CheckOK(2, n2, at(base), at(base+1), "10.0.0.2")
		c.CheckOK(3, n2, at(base), at(base+1), "10.0.0.2")
		c.CheckOK(1, m, at(base+2), at(base+3), "10.0.0.1")
	}
	c.TakeReady()
	if x := c.Node(3); x.Vouched {
		t.Errorf("n2 back in the set: the newcomer copying its identity is %s, vouched", x.Role)
	}
	promoted := rcWritable("n2", 2, 200, n2.StartTime)
	for k := 0; k < 3; k++ {
		base := 6000 + 1000*k
		c.CheckOK(3, promoted, at(base), at(base+1), "10.0.0.2")
		c.CheckFailed(2, errTimeout{}, true, at(base))
		c.CheckOK(1, m, at(base+2), at(base+3), "10.0.0.1")
	}
	c.TakeReady()
	if e := c.Elected().Master; e == nil || e.ID != 1 {
		master := "none"
		if e != nil {
			master = e.Addr
		}
		t.Errorf("the newcomer claimed a promotion: master %s, newcomer %s (vouched %v); want n1 the master", master, c.Node(3).Role, c.Node(3).Vouched)
	}
}
