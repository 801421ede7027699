package topology

import (
	"errors"
	"testing"
)

// aliasedSync: n2's server at node 2 and (by a second name) node 3, the
// master's sync standby. Node 2 finds it down at 0.1s and up again at
// 0.15s (the check that found it began then): the master's walsender rows
// read before 0.15s speak of the run before it came back (a walsender
// that served it before lingers until wal_sender_timeout), and node 2 is
// RoleReplica on the row read at 0.12s. Node 3 stands for the same server
// as node 2 again. Node 2's next check times out (suspect): dedup has node
// 3 stand for the server. Node 3 reaches the server node 2 saw come back
// at 0.15s, and must not be sync on a row node 2 is not sync on.
func TestServerBackFromDownNotSyncOnAnOldRowWhenAnotherAddressStandsForIt(t *testing.T) {
	c := aliasedSync(t)
	c.CheckFailed(2, errors.New("connection refused"), false, at(100))
	m := master(1, 1000, "n2")
	m.Replicas[0].SyncState = "sync"
	c.CheckOK(1, m, at(120), at(121), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 1000), at(150), at(151), "10.0.0.2")
	c.TakeReady()
	if x, y := c.Node(2), c.Node(3); x.Role == RoleSyncReplica || y.AliasOf != x {
		t.Fatalf("setup: node 2 role %s, node 3 alias of %s", x.Role, aliasName(y))
	}
	c.CheckFailed(2, errors.New("timeout"), true, at(200))
	c.TakeReady()
	if x := c.Node(3); x.AliasOf == nil && x.Role == RoleSyncReplica {
		t.Fatalf("n2's server down at 0.1s, back at 0.15s (seen at node 2); the master's walsenders last read at 0.12s; node 2 suspect, node 3 stands for the server: role %s, sync state %q, backSince %s (node 2's %s); want no sync role until the master reads its walsenders after 0.15s",
			x.Role, x.SyncState, sinceText(x), sinceText(c.Node(2)))
	}
}
