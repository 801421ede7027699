package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// The master n2, a host of the connection string (10.0.0.2), fails over
// to n3 and rejoins as its replica (pg_rewind, a restart), streaming as
// n2. Its checks have not seen it since as a replica: the last one found
// it writable on timeline 1, or it went down for the rewind. A server
// nothing vouches for listens on n2's machine (10.0.0.2:5433, a member
// the source lists) and says it is a replica streaming timeline 2 from n3
// as n2. n3's walsenders list n2 from that machine: the row is n2's as
// much as the newcomer's. The newcomer is not vouched for by it, nor
// sync, and its claim of a promotion later takes no writes.
func TestServerBesideAMasterThatRejoinsTakesNoRowByItsName(t *testing.T) {
	for _, down := range []bool{false, true} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{
			{ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
			{ID: 3, Addr: "10.0.0.3:5432", Host: "10.0.0.3", Trusted: true},
			{ID: 4, Addr: "10.0.0.2:5433", Host: "10.0.0.2"},
		})
		rep := func(name string, tl uint32, upstream string, start time.Duration) checker.Result {
			r := replica(name, tl, tl, 100)
			r.StartTime = t0.Add(start)
			r.UpstreamHost, r.UpstreamPort = upstream, 5432
			return r
		}
		old := rcWritable("n2", 1, 100, t0.Add(-time.Hour),
			checker.Replica{ApplicationName: "n3", ClientAddr: "10.0.0.3", State: "streaming", SyncState: "sync"})
		n3 := rep("n3", 1, "10.0.0.2", 30*time.Second)
		for k := 0; k < 2; k++ {
			base := 1000 * k
			c.CheckOK(2, old, at(base+1), at(base+2), "10.0.0.2")
			c.CheckOK(3, n3, at(base+3), at(base+4), "10.0.0.3")
			c.CheckOK(4, rep("r", 1, "10.0.0.9", 40*time.Second), at(base+3), at(base+4), "10.0.0.2")
		}
		c.TakeReady()
		if e := c.Elected().Master; e == nil || e.ID != 2 {
			t.Fatalf("setup: master %+v; want n2", c.Elected())
		}

		// The failover: n3 promoted; n2 rejoins it unseen.
		if down {
			c.CheckFailed(2, errors.New("connection refused"), false, at(2000))
		}
		promoted := rcWritable("n3", 2, 300, n3.StartTime,
			checker.Replica{ApplicationName: "n2", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "sync"})
		for k := 0; k < 3; k++ {
			base := 3000 + 1000*k
			c.CheckOK(4, rep("n2", 2, "10.0.0.3", 40*time.Second), at(base), at(base+1), "10.0.0.2")
			c.CheckOK(3, promoted, at(base+2), at(base+3), "10.0.0.3")
		}
		c.TakeReady()
		if x := c.Node(4); x.Vouched || x.Role.IsReplica() {
			t.Errorf("n2 down %v: the newcomer beside the old master took the row n2 at the new one: %s (sync state %q), vouched %v", down, x.Role, x.SyncState, x.Vouched)
		}
	}
}
