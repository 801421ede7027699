package topology

import (
	"testing"
	"time"
)

// n2, the master's sync standby, restarts; node 2's check sees it at 0.2s
// (the master's walsenders last read at 0.001s): node 2 is RoleReplica
// until the master reads them again. Discovery then reports a new address
// of the same server (a DNS name the user gave resolves to another address
// too), ahead of node 2 in the set's order. Its first check finds the same
// new run: dedup takes it to stand for the server, node 2 its alias. The
// row that calls n2 sync is still the one read before the restart: the
// server must not be sync on it at whichever address stands for it.
func TestNewRepresentativeOfARestartedServerNotSyncOnARowFromBeforeTheRestart(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	m := master(1, 1000, "n2")
	m.Replicas[0].SyncState = "sync"
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 1000), at(3), at(4), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica {
		t.Fatalf("setup: node 2 role %s", x.Role)
	}
	r := replica("n2", 1, 1, 900)
	r.StartTime = r.StartTime.Add(time.Minute)
	c.CheckOK(2, r, at(200), at(201), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Role == RoleSyncReplica {
		t.Fatalf("setup: node 2 sync right after its restart: %s", x.Role)
	}
	mb := members(2)
	added := Member{ID: 4, Addr: "10.0.0.4:5432", Host: "10.0.0.4", Trusted: true}
	c.SetMembers(at(210), []Member{mb[0], added, mb[1]})
	c.CheckOK(4, r, at(220), at(221), "10.0.0.2")
	c.TakeReady()
	for _, id := range []ID{4, 2} {
		x := c.Node(id)
		if x.Role == RoleSyncReplica {
			t.Fatalf("n2's server restarted at 0.2s (seen at node 2), the master's walsenders last read at 0.001s; node 4, a new address of it checked at 0.22s: node %d (%s) alias of %s, role %s, sync state %q; want no sync role until the master lists the new server",
				x.ID, x.Addr, aliasName(x), x.Role, x.SyncState)
		}
	}
}

// aliasName names the node x stands for, for messages.
func aliasName(x *Node) string {
	if x.AliasOf == nil {
		return "none"
	}
	return "node " + uitoa(uint32(x.AliasOf.ID))
}
