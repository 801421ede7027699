package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// TestFirstCheckWalreceiverStoppedIsNotSyncOnOldRow: the master's
// walsenders are read (n2 sync, first in synchronous_standby_names
// FIRST 1 (n2, n3)); then n2's walreceiver stops (its primary_conninfo
// emptied, or the walsender killed): its walsender exits at once and the
// master names n3 synchronous and acknowledges commits n2 lacks. n2's
// first check (the Manager just started, or discovery just added it)
// begins after that read and shows no walreceiver (the check user has
// pg_monitor: the rows show addresses). The row read before is of the
// stream n2 left: n2 must not be claimed sync on it until the master's
// walsenders are read again, as it is not once n2 was checked before.
func TestFirstCheckWalreceiverStoppedIsNotSyncOnOldRow(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
	s1, s2, s3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
	rows := []checker.Replica{
		{ApplicationName: "n2", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "sync", ReplayLSN: 1000},
		{ApplicationName: "n3", ClientAddr: "10.0.0.3", State: "streaming", SyncState: "potential", ReplayLSN: 1000},
	}
	c.CheckOK(1, rcWritable("n1", 1, 1000, s1, rows...), at(1), at(2), "10.0.0.1")
	c.CheckOK(3, rcReplica("n3", 1, 1000, s3, "10.0.0.1"), at(3), at(4), "10.0.0.3")
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", c.Elected())
	}
	n2 := rcReplica("n2", 1, 1000, s2, "")
	n2.ReceiveTimeline, n2.UpstreamPort = 0, 0
	c.CheckOK(2, n2, at(5), at(6), "10.0.0.2")
	if x := c.Node(2); x.Role == RoleSyncReplica {
		t.Errorf("n2, whose first check (begun after the master's read) shows its walreceiver stopped, is claimed %v on the row read before (sync state %q)",
			x.Role, x.SyncState)
	}
	// Control: checked before, the same stop gives sync unknown.
	c2 := New(Config{})
	c2.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
	c2.CheckOK(2, rcReplica("n2", 1, 1000, s2, "10.0.0.1"), at(0), at(1), "10.0.0.2")
	c2.CheckOK(1, rcWritable("n1", 1, 1000, s1, rows...), at(1), at(2), "10.0.0.1")
	c2.CheckOK(3, rcReplica("n3", 1, 1000, s3, "10.0.0.1"), at(3), at(4), "10.0.0.3")
	c2.CheckOK(2, n2, at(5), at(6), "10.0.0.2")
	if x := c2.Node(2); x.Role == RoleSyncReplica {
		t.Errorf("control: n2 checked before is claimed %v", x.Role)
	}
}
