package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// TestReplicaWithoutWalreceiverIsNotSyncByAnotherClientsAddressRow: the
// check user has pg_monitor, and n2's check finds no walreceiver (its
// pg_stat_wal_receiver is empty, not hidden): n2 streams from nobody. On
// n2's machine another standby, outside the set, streams from the master
// under the default application_name "walreceiver" and is its synchronous
// standby. The master's one row from n2's address is that standby's: n2
// is neither sync nor following the master.
func TestReplicaWithoutWalreceiverIsNotSyncByAnotherClientsAddressRow(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
	s1, s2 := t0.Add(-time.Hour), t0.Add(-2*time.Hour)
	rows := []checker.Replica{{ApplicationName: "walreceiver", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "sync", ReplayLSN: 100000}}
	n2 := rcReplica("16/main", 1, 1000, s2, "")
	n2.ReceiveTimeline, n2.UpstreamPort = 0, 0
	ms := 0
	round := rounds(&ms)
	round(func() {
		c.CheckOK(2, n2, at(ms+1), at(ms+2), "10.0.0.2")
	}, func() {
		c.CheckOK(1, rcWritable("16/main", 1, 100000, s1, rows...), at(ms+3), at(ms+4), "10.0.0.1")
	})
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", c.Elected())
	}
	x := c.Node(2)
	t.Logf("n2: role %v, detached %q, sync unknown %q, lag %d bytes known %v", x.Role, x.Detached, x.SyncUnknown, x.LagBytes, x.LagKnown)
	if x.Role == RoleSyncReplica {
		t.Errorf("n2 has no walreceiver, yet is claimed sync by another client's row from its address")
	}
	if x.Role != RoleDetached {
		t.Errorf("n2 has no walreceiver, yet is %v, taken as following the master", x.Role)
	}
}
