package topology

import (
	"errors"
	"testing"
)

// n2, the master's sync standby (the master's walsenders read at 0.001s),
// is found down at node 2 at 0.1s: walsender rows read before 0.1s speak
// of the run before, and while it was out of reach the master may have
// named another standby synchronous and acknowledged commits n2 lacks.
// Discovery then reports a new address of the same server (node 4); its
// first check, at 0.16s, finds the server up again, the same run and name
// node 2 last saw. Node 2 has not been checked since it went down. The
// server seen at node 4 is the one seen down at 0.1s: it must not be sync
// on the row read at 0.001s.
func TestAddressAddedWhileItsServerIsDownNotSyncOnARowFromBeforeTheDown(t *testing.T) {
	c := syncTrio(t)
	c.CheckFailed(2, errors.New("connection refused"), false, at(100))
	c.TakeReady()
	added := Member{ID: 4, Addr: "10.0.0.4:5432", Host: "10.0.0.4", Trusted: true}
	c.SetMembers(at(150), append(members(3), added))
	c.CheckOK(4, replica("n2", 1, 1, 1000), at(160), at(161), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(4); x.Role == RoleSyncReplica {
		t.Fatalf("n2's server found down at node 2 at 0.1s; node 4, a new address of it, first checked at 0.16s; the master's walsenders last read at 0.001s: node 4 role %s, sync state %q, backSince %s; want no sync role until the master lists it again",
			x.Role, x.SyncState, sinceText(x))
	}
}

// sinceText is a node's backSince for messages.
func sinceText(x *Node) string {
	if x.backSince.IsZero() {
		return "never set"
	}
	return x.backSince.Sub(t0).String()
}
