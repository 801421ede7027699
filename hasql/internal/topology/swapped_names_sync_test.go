package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// Two replicas whose servers swapped addresses (pods rescheduled onto each
// other's IPs) while the discoverer's names are still the old ones (a
// Patroni API that is behind), at addresses the connection string names
// (trusted). The check user has pg_monitor: the master's walsender rows
// show which address each name streams from, and each replica's own check
// shows its walreceiver's application_name. The node at 10.0.0.2 is named
// n2 by the source but reaches the server that streams as n3, which is
// async; the row named n2 (sync) comes from 10.0.0.3. Nothing supports
// calling the node at 10.0.0.2 sync: its server's own name and the row's
// address both say it is the other one. Sync is claimed only when known.
func TestStaleMemberNamesOfSwappedServersClaimNoSync(t *testing.T) {
	c := New(Config{})
	mb := func(id ID, ip, name string) Member {
		return Member{ID: id, Addr: ip + ":5432", Host: ip, Name: name, Trusted: true}
	}
	c.SetMembers(at(0), []Member{mb(1, "10.0.0.1", "n1"), mb(2, "10.0.0.2", "n2"), mb(3, "10.0.0.3", "n3")})
	m := master(1, 100)
	m.Replicas = []checker.Replica{
		{ApplicationName: "n2", SyncState: "sync", ClientAddr: "10.0.0.3", State: "streaming"},
		{ApplicationName: "n3", SyncState: "async", ClientAddr: "10.0.0.2", State: "streaming"},
	}
	rep := func(name string, start time.Duration) checker.Result {
		r := replica(name, 1, 1, 100)
		r.StartTime = t0.Add(start)
		r.UpstreamHost, r.UpstreamPort = "10.0.0.1", 5432
		return r
	}
	for round := 0; round < 3; round++ {
		base := 1000 * round
		c.CheckOK(1, m, at(base+1), at(base+2), "10.0.0.1")
		// At 10.0.0.2 answers the server that streams as n3; at 10.0.0.3
		// the one that streams as n2.
		c.CheckOK(2, rep("n3", 30*time.Second), at(base+3), at(base+4), "10.0.0.2")
		c.CheckOK(3, rep("n2", 20*time.Second), at(base+3), at(base+5), "10.0.0.3")
	}
	c.TakeReady()
	if e := c.Elected().Master; e == nil || e.ID != 1 {
		t.Fatalf("master %+v", c.Elected())
	}
	x := c.Node(2)
	t.Logf("node 2 (10.0.0.2, named n2, server n3): role %s sync %q unknown %q detached %q", x.Role, x.SyncState, x.SyncUnknown, x.Detached)
	if x.Role == RoleSyncReplica {
		t.Errorf("the node at 10.0.0.2 is claimed sync by the row of another address (10.0.0.3); its own server streams as n3, async")
	}
}
