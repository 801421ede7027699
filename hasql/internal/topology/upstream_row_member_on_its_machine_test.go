package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// Replica n2, a host of the connection string, cascades from a standby
// outside the node set (10.0.0.7:5432); every server goes by one
// cluster_name, main. The master's one walsender row main, sync, comes
// from 10.0.0.7: it may be that standby's, and n2's sync state is
// unknown (TestCascadingReplicaIsNotSyncByAnUpstreamNamesakeOutsideTheSet's rule). The
// source lists a member on the standby's machine at another port
// (10.0.0.7:6000): one of another cluster, one that says it is writable,
// a replica that streams as r, nothing vouching for any of them, or a
// host of the connection string that streams as r. None of them is the
// server n2 streams from: the row may still be the standby's, and n2 is
// not sync on it (SyncOnly reads would go to a replica the master does
// not wait for).
func TestMemberOnTheMachineAReplicaCascadesFromMakesItNotSync(t *testing.T) {
	for _, kind := range []string{"foreign", "writable", "other name", "trusted other name"} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{
			{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
			{ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
			{ID: 3, Addr: "10.0.0.7:6000", Host: "10.0.0.7", Trusted: kind == "trusted other name"},
		})
		m := rcWritable("main", 1, 1000, t0.Add(-time.Hour),
			checker.Replica{ApplicationName: "main", ClientAddr: "10.0.0.7", State: "streaming", SyncState: "sync", ReplayLSN: 1000})
		n2 := rcReplica("main", 1, 1000, t0.Add(-2*time.Hour), "10.0.0.7")
		other := rcReplica("r", 1, 1000, t0.Add(-3*time.Hour), "10.0.0.1")
		switch kind {
		case "foreign":
			other.SystemID = 77
		case "writable":
			other = rcWritable("r", 1, 10, t0.Add(-3*time.Hour))
		}
		for k := 0; k < 3; k++ {
			base := 1000 * k
			c.CheckOK(1, m, at(base+1), at(base+2), "10.0.0.1")
			c.CheckOK(2, n2, at(base+3), at(base+4), "10.0.0.2")
			c.CheckOK(3, other, at(base+3), at(base+4), "10.0.0.7")
		}
		c.TakeReady()
		if e := c.Elected().Master; e == nil || e.ID != 1 {
			t.Fatalf("%s: master %+v", kind, c.Elected())
		}
		if x := c.Node(2); x.Role == RoleSyncReplica || x.SyncState == "sync" {
			t.Errorf("%s member at 10.0.0.7:6000: n2, cascading from 10.0.0.7:5432, is sync on the row from 10.0.0.7", kind)
		}
	}
}
