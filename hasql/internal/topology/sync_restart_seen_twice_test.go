package topology

import (
	"testing"
	"time"
)

// aliasedSync; n2's server restarts and node 3, its second address, sees
// the new run first at 0.201s: no sync role until the master's walsenders
// are read again. The master reads them at 0.25s and calls the new run
// sync: n2 is sync again. Then node 2's check, at 0.26s, finds the same
// new run (same start time node 3 saw). Nothing restarted since the
// master's read: n2 stays sync.
func TestSyncKeptWhenTheSecondAddressSeesARestartTheMasterListedSince(t *testing.T) {
	c := aliasedSync(t)
	r := replica("n2", 1, 1, 900)
	r.StartTime = r.StartTime.Add(time.Minute)
	c.CheckOK(3, r, at(201), at(202), "10.0.0.2")
	m := master(1, 1000, "n2")
	m.Replicas[0].SyncState = "sync"
	c.CheckOK(1, m, at(250), at(251), "10.0.0.1")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica {
		t.Fatalf("setup: after the master's read at 0.25s node 2 role %s", x.Role)
	}
	c.CheckOK(2, r, at(260), at(261), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica {
		t.Fatalf("n2's server restarted once (seen at node 3 at 0.201s); the master listed the new run sync at 0.25s; node 2 found the same run at 0.26s: role %s, sync unknown %q, backSince %s; want sync",
			x.Role, x.SyncUnknown, sinceText(x))
	}
}
