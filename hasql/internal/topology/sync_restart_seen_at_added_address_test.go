package topology

import (
	"errors"
	"testing"
	"time"
)

// syncTrio, then the master goes out of sight: n2 is the server the last
// master called sync, PreferMaster's first choice. n2's server restarts
// (it opens behind what it had replayed; the master may have named n3
// synchronous meanwhile). Discovery reports a new address of it (node 4),
// whose first check finds the new run: same system identifier and name, a
// new start time. Node 2 has not been checked since. The restart is known:
// node 2 must not stay PreferMaster's first choice as the server the last
// master called sync.
func TestSyncStateForgottenWhenTheRestartIsSeenAtAnAddressAddedAfter(t *testing.T) {
	c := syncTrio(t)
	c.CheckFailed(1, errors.New("connection refused"), false, at(100))
	added := Member{ID: 4, Addr: "10.0.0.4:5432", Host: "10.0.0.4", Trusted: true}
	c.SetMembers(at(150), append(members(3), added))
	r := replica("n2", 1, 1, 900)
	r.StartTime = r.StartTime.Add(time.Minute)
	c.CheckOK(4, r, at(200), at(201), "10.0.0.2")
	c.TakeReady()
	if ids := lastSyncNodes(c); len(ids) > 0 {
		x := c.Node(ids[0])
		t.Fatalf("n2's server restarted (seen at node 4, a new address of it, at 0.2s), no master known: node %d (%s) role %s, sync state %q: still taken as the server the last master called sync",
			x.ID, x.Addr, x.Role, x.SyncState)
	}
}

// The same with the master in sight (its walsenders last read at 0.001s)
// and the new run's walreceiver not started yet: node 2, not checked
// since, must not be sync on the row read before the restart.
func TestServerRestartSeenAtAnAddressAddedAfterNotSyncOnARowFromBefore(t *testing.T) {
	c := syncTrio(t)
	added := Member{ID: 4, Addr: "10.0.0.4:5432", Host: "10.0.0.4", Trusted: true}
	c.SetMembers(at(150), append(members(3), added))
	r := replica("n2", 1, 0, 900) // walreceiver not started yet
	r.StartTime = r.StartTime.Add(time.Minute)
	c.CheckOK(4, r, at(200), at(201), "10.0.0.2")
	c.TakeReady()
	for _, id := range []ID{2, 4} {
		if x := c.Node(id); x.Role == RoleSyncReplica {
			t.Fatalf("n2's server restarted (seen at node 4, a new address of it, at 0.2s), the master's walsenders last read at 0.001s: node %d (%s) alias of %s, role %s, sync state %q; want no sync role until the master lists the new server",
				x.ID, x.Addr, aliasName(x), x.Role, x.SyncState)
		}
	}
}
