package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// As TestServerBesideAReplicaBackInTheSetIsVouchedForNoMore, but n2 comes
// back into the set under its member name, n2, and its checks fail (a
// pg_hba rule, a partition between the Manager and n2 alone) while it
// streams on: the row n2 from its machine is as likely its as the
// newcomer's, which is vouched for no more, and its claim of a promotion
// takes no writes.
func TestServerBesideAReplicaBackInTheSetDownIsVouchedForNoMore(t *testing.T) {
	c := New(Config{})
	m1 := Member{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true}
	beside := Member{ID: 3, Addr: "10.0.0.2:5433", Host: "10.0.0.2"}
	c.SetMembers(at(0), []Member{m1, beside})
	m := master(1, 100)
	m.Replicas = []checker.Replica{{ApplicationName: "n2", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "sync"}}
	other := replica("n2", 1, 1, 100)
	other.StartTime = t0.Add(40 * time.Second)
	other.UpstreamHost, other.UpstreamPort = "10.0.0.1", 5432
	for k := 0; k < 2; k++ {
		base := 1000 * k
		c.CheckOK(3, other, at(base+1), at(base+2), "10.0.0.2")
		c.CheckOK(1, m, at(base+3), at(base+4), "10.0.0.1")
	}
	c.SetMembers(at(2000), []Member{m1, {ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Name: "n2", Trusted: true}, beside})
	for k := 0; k < 2; k++ {
		base := 3000 + 1000*k
		c.CheckFailed(2, errors.New("connection refused"), false, at(base))
		c.CheckOK(3, other, at(base), at(base+1), "10.0.0.2")
		c.CheckOK(1, m, at(base+2), at(base+3), "10.0.0.1")
	}
	c.TakeReady()
	if x := c.Node(3); x.Vouched || x.Role.IsReplica() {
		t.Errorf("n2 back in the set, down: the newcomer beside it is %s (sync state %q), vouched %v; want detached", x.Role, x.SyncState, x.Vouched)
	}
	promoted := rcWritable("n2", 2, 200, other.StartTime)
	for k := 0; k < 3; k++ {
		base := 6000 + 1000*k
		c.CheckOK(3, promoted, at(base), at(base+1), "10.0.0.2")
		c.CheckFailed(2, errors.New("connection refused"), false, at(base))
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
