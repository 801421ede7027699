package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// n2, sync under FIRST 1 (n2, n3), has its primary_conninfo's
// application_name changed to n2x and reloaded: its walreceiver restarts
// under the new name, which synchronous_standby_names does not list; the
// master makes n3 sync. Until the master's walsenders are read again, the
// row of n2 from before is the only one from n2's address.
func TestSyncReplicaRenamedIsNotSyncOnTheOldRow(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	start2, start3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour)
	m := rcWritable("n1", 1, 1000, t0.Add(-3*time.Hour),
		checker.Replica{ApplicationName: "n2", SyncState: "sync", ClientAddr: "10.0.0.2", State: "streaming", ReplayLSN: 1000},
		checker.Replica{ApplicationName: "n3", SyncState: "potential", ClientAddr: "10.0.0.3", State: "streaming", ReplayLSN: 1000})
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, rcReplica("n2", 1, 1000, start2, "10.0.0.1"), at(3), at(4), "10.0.0.2")
	c.CheckOK(3, rcReplica("n3", 1, 1000, start3, "10.0.0.1"), at(3), at(4), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica {
		t.Fatalf("setup: n2 role %s, want sync", x.Role)
	}
	c.CheckOK(2, rcReplica("n2x", 1, 1000, start2, "10.0.0.1"), at(102), at(103), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Role == RoleSyncReplica {
		t.Fatalf("n2 renamed n2x, the master's walsenders last read before: role %s, sync state %q; want no sync role until the master lists it again",
			x.Role, x.SyncState)
	}
}
