package topology

import (
	"testing"
	"time"
)

// n2's server is reached at node 2 and (by a second name) at node 3, and
// is the master's sync standby; its name n2 is its walreceiver's
// application_name, its cluster_name is "pg" (Patroni: the member name and
// the scope). It restarts; node 3's check sees the new server first, a hot
// standby that opened before its walreceiver started, so its name is its
// cluster_name for that check (checker.Result.Name; dedup knows this case).
// A restart all the same: same system identifier, a new start time, and
// the master last read its walsenders before it. Node 2, not checked since,
// still shows the server before; the row that says sync is the walsender of
// the run before, and the master may have named another standby sync and
// acknowledged commits the restarted server lacks. Node 2 must not be sync
// on that row.
func TestServerRestartedUnderItsClusterNameNotSyncAtItsOtherAddress(t *testing.T) {
	c := aliasedSync(t)
	r := replica("n2", 1, 0, 900)
	r.Name = "pg"
	r.ReceiveLSN = 0
	r.StartTime = r.StartTime.Add(time.Minute)
	c.CheckOK(3, r, at(201), at(202), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Up && x.Role == RoleSyncReplica {
		t.Fatalf("n2's server restarted at 0.2s (seen at node 3 under its cluster_name), the master's walsenders last read at 0.001s: node 2 role %s, sync state %q, sync unknown %q, alias of %v; want no sync role until the master lists the restarted server",
			x.Role, x.SyncState, x.SyncUnknown, x.AliasOf)
	}
}
