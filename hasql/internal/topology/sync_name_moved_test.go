package topology

import (
	"errors"
	"testing"
	"time"
)

// n1 master, n2 sync. Node 2 reaches n2's server by its address, node 3 by
// a name (an alias of node 2). The master goes out of sight; then node 3's
// name moves to n3, another standby (its own name, its own start time):
// n2's server neither went down nor restarted, and node 2 still reaches it.
// What the last master said of n2 stays n2's: PreferMaster takes node 2
// first.
func TestSyncStateKeptWhenAnotherAddressOfTheServerMovesToAnotherServer(t *testing.T) {
	c := aliasedSync(t)
	c.CheckFailed(1, errors.New("connection refused"), false, at(100))
	c.CheckOK(2, replica("n2", 1, 1, 1000), at(150), at(151), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleReplica || x.SyncState != "sync" {
		t.Fatalf("setup: node 2 %s sync state %q", x.Role, x.SyncState)
	}
	r := replica("n3", 1, 1, 1000)
	r.StartTime = r.StartTime.Add(time.Hour)
	c.CheckOK(3, r, at(201), at(202), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleReplica || x.SyncState != "sync" {
		t.Fatalf("node 3's name moved from n2's server to n3; n2's server, up at node 2 all along: role %s, sync state %q, sync unknown %q; want replica with sync state \"sync\"",
			x.Role, x.SyncState, x.SyncUnknown)
	}
}
