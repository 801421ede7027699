package topology

import (
	"testing"
	"time"
)

// syncTrio (the master's walsenders read at 0.001s call n2 sync); discovery
// then reports an address nothing vouches for (not trusted) that reaches
// n2's server too. n2's server restarts (it opens behind what it had
// replayed; the master may have named n3 synchronous meanwhile). The
// untrusted address is checked first and shows the new run; then node 2,
// n2's own trusted address, finds the same new run with its walreceiver
// not started yet. Node 2 saw its server change: the row read at 0.001s
// is the walsender of the run before, and node 2 must not be sync on it,
// whoever else showed the new run first.
func TestRestartSeenFirstAtAnUntrustedAddressStillEndsTheOldSyncRow(t *testing.T) {
	c := syncTrio(t)
	c.SetMembers(at(150), append(members(3), rcMember(4, "10.0.0.4", false)))
	r := replica("n2", 1, 0, 900) // restarted, walreceiver not started yet
	r.StartTime = r.StartTime.Add(time.Minute)
	c.CheckOK(4, r, at(200), at(201), "10.0.0.2")
	c.CheckOK(2, r, at(210), at(211), "10.0.0.2")
	c.TakeReady()
	for _, id := range []ID{2, 4} {
		if x := c.Node(id); x.Role == RoleSyncReplica {
			t.Fatalf("n2's server restarted (new run seen at untrusted node 4 at 0.2s, then at node 2 at 0.21s), the master's walsenders last read at 0.001s: node %d (%s) alias of %s, vouched %v, role %s, sync state %q, backSince %s; want no sync role until the master lists the new run",
				x.ID, x.Addr, aliasName(x), x.Vouched, x.Role, x.SyncState, sinceText(x))
		}
	}
}

// The same with the added address trusted, and the new run showing no
// name: its walreceiver not started yet and cluster_name unset
// (PostgreSQL's default), so the name is read as "". Node 2 then finds
// the same new run: it must not be sync on the row of the run before.
func TestRestartSeenFirstUnnamedAtAnAddedAddressStillEndsTheOldSyncRow(t *testing.T) {
	c := syncTrio(t)
	added := Member{ID: 4, Addr: "10.0.0.4:5432", Host: "10.0.0.4", Trusted: true}
	c.SetMembers(at(150), append(members(3), added))
	r := replica("n2", 1, 0, 900) // restarted, walreceiver not started yet
	r.StartTime = r.StartTime.Add(time.Minute)
	r.Name = "" // no cluster_name
	c.CheckOK(4, r, at(200), at(201), "10.0.0.2")
	c.CheckOK(2, r, at(210), at(211), "10.0.0.2")
	c.TakeReady()
	for _, id := range []ID{2, 4} {
		if x := c.Node(id); x.Role == RoleSyncReplica {
			t.Fatalf("n2's server restarted (new run, no name, seen at added node 4 at 0.2s, then at node 2 at 0.21s), the master's walsenders last read at 0.001s: node %d (%s) alias of %s, vouched %v, role %s, sync state %q, backSince %s; want no sync role until the master lists the new run",
				x.ID, x.Addr, aliasName(x), x.Vouched, x.Role, x.SyncState, sinceText(x))
		}
	}
}

// The same with the new run showing its cluster_name ("batman", Patroni's
// scope) as every server does until its walreceiver starts, where the run
// before showed its walreceiver's application_name "n2".
func TestRestartSeenFirstUnderTheClusterNameAtAnAddedAddressStillEndsTheOldSyncRow(t *testing.T) {
	c := syncTrio(t)
	added := Member{ID: 4, Addr: "10.0.0.4:5432", Host: "10.0.0.4", Trusted: true}
	c.SetMembers(at(150), append(members(3), added))
	r := replica("n2", 1, 0, 900) // restarted, walreceiver not started yet
	r.StartTime = r.StartTime.Add(time.Minute)
	r.Name = "batman"
	c.CheckOK(4, r, at(200), at(201), "10.0.0.2")
	c.CheckOK(2, r, at(210), at(211), "10.0.0.2")
	c.TakeReady()
	for _, id := range []ID{2, 4} {
		if x := c.Node(id); x.Role == RoleSyncReplica {
			t.Fatalf("n2's server restarted (new run, named by its cluster_name, seen at added node 4 at 0.2s, then at node 2 at 0.21s), the master's walsenders last read at 0.001s: node %d (%s) alias of %s, vouched %v, role %s, sync state %q, backSince %s; want no sync role until the master lists the new run",
				x.ID, x.Addr, aliasName(x), x.Vouched, x.Role, x.SyncState, sinceText(x))
		}
	}
}
