package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// The master n1 and replica n2 share a machine (10.0.0.5, ports 5432 and
// 5433); n2 reaches n1 at the loopback address, which the set does not
// list, so n1's walsender row n2, sync, comes from 127.0.0.1 (see
// TestReplicaSharingTheMastersHostFollowsItThroughAnotherAddress). A
// member on another machine that nothing vouches for says it is a
// replica named n2 too. A namesake nothing vouches for changes nothing of
// our replicas: n2 stays sync.
func TestUnvouchedNamesakeLeavesAReplicaReachingItsMasterAtAnUnlistedAddressSync(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{
		{ID: 1, Addr: "10.0.0.5:5432", Host: "10.0.0.5", Trusted: true},
		{ID: 2, Addr: "10.0.0.5:5433", Host: "10.0.0.5", Trusted: true},
		{ID: 3, Addr: "10.0.0.9:5432", Host: "10.0.0.9"},
	})
	rows := []checker.Replica{{ApplicationName: "n2", ClientAddr: "127.0.0.1", State: "streaming", SyncState: "sync", ReplayLSN: 1000}}
	for k := 0; k < 3; k++ {
		base := 1000 * k
		c.CheckOK(1, rcWritable("n1", 1, 1000, t0.Add(-time.Hour), rows...), at(base+1), at(base+2), "10.0.0.5")
		c.CheckOK(2, rcReplica("n2", 1, 1000, t0.Add(-2*time.Hour), "127.0.0.1"), at(base+3), at(base+4), "10.0.0.5")
		c.CheckOK(3, rcReplica("n2", 1, 1000, t0.Add(-3*time.Hour), "10.0.0.5"), at(base+3), at(base+4), "10.0.0.9")
	}
	c.TakeReady()
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("master %+v", c.Elected())
	}
	if x := c.Node(2); x.Role != RoleSyncReplica {
		t.Errorf("a namesake nothing vouches for made n2 %s (%s %s); want sync, as the master says", x.Role, x.Detached, x.SyncUnknown)
	}
	if x := c.Node(3); x.Vouched || x.Role.IsReplica() {
		t.Errorf("the namesake on another machine is %s, vouched %v; want detached", x.Role, x.Vouched)
	}
}
