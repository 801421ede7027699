package topology

import (
	"testing"
)

// n2, sync under FIRST 1 (n2, n3), has its primary_conninfo's
// application_name changed to n2x and reloaded: its walreceiver restarts
// under the new name, which synchronous_standby_names does not list; the
// master makes n3 sync. Until the master's walsenders are read again, the
// row of n2 from before is the only one from n2's address.
func TestSyncReplicaRenamedIsNotSyncOnTheOldRow(t *testing.T) {
	c, start2, _ := syncN2(t)
	c.CheckOK(2, rcReplica("n2x", 1, 1000, start2, "10.0.0.1"), at(102), at(103), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Role == RoleSyncReplica {
		t.Fatalf("n2 renamed n2x, the master's walsenders last read before: role %s, sync state %q; want no sync role until the master lists it again",
			x.Role, x.SyncState)
	}
}
