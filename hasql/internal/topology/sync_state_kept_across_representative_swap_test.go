package topology

import (
	"errors"
	"slices"
	"testing"
)

// aliasedSync, then the master goes out of sight: n2's server, reached at
// node 2 and node 3, is the one the last master called sync, and
// PreferMaster takes it first. Node 2's check times out once (suspect, not
// down): dedup has node 3 stand for the server. Nothing says the server
// went down or restarted: node 3's check finds it as before. Which address
// stands for it changes nothing of what the last master said of it.
func TestLastSyncKeptWhenTheRepresentativeOfTheServerChanges(t *testing.T) {
	c := aliasedSync(t)
	c.CheckFailed(1, errors.New("connection refused"), false, at(100))
	c.TakeReady()
	if ids := lastSyncNodes(c); !slices.Equal(ids, []ID{2}) {
		t.Fatalf("setup: last sync %v", ids)
	}
	c.CheckFailed(2, errors.New("timeout"), true, at(200))
	c.CheckOK(3, replica("n2", 1, 1, 1000), at(210), at(211), "10.0.0.2")
	c.TakeReady()
	if ids := lastSyncNodes(c); len(ids) == 0 {
		x := c.Node(3)
		t.Fatalf("no master known; n2's server up at node 3, node 2 suspect after one timeout: no node taken as the last master's sync (node 3 alias of %s, role %s, sync state %q, syncTL %d; node 2 alias of %s, sync state %q); want node 3",
			aliasName(x), x.Role, x.SyncState, x.syncTL, aliasName(c.Node(2)), c.Node(2).SyncState)
	}
	// Node 2 answers again, as the same server: it stands for it again.
	c.CheckOK(2, replica("n2", 1, 1, 1000), at(220), at(221), "10.0.0.2")
	c.TakeReady()
	if ids := lastSyncNodes(c); len(ids) == 0 {
		x := c.Node(2)
		t.Fatalf("no master known; n2's server answered throughout: after node 2 answered again, no node taken as the last master's sync (node 2 alias of %s, role %s, sync state %q)",
			aliasName(x), x.Role, x.SyncState)
	}
}
