package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// TestReplicationRoleCheckUserKeepsReplicaWithOwnAppName: the check user
// is the replication role (no pg_monitor). On the master,
// pg_stat_activity shows the walsenders' client_addr to their own role
// (HAS_PGSTAT_PERMISSIONS), pg_stat_get_wal_senders hides the sync state;
// on the replica pg_stat_wal_receiver hides every field but the pid (no
// pg_read_all_stats), so the replica's Name is its cluster_name and no
// walreceiver shows. Its primary_conninfo sets application_name=node2
// (repmgr does, as does pg_basebackup -R -d 'application_name=...'). The
// master's only row from 10.0.0.2 is node2's: n2 is a replica following
// n1, not detached.
func TestReplicationRoleCheckUserKeepsReplicaWithOwnAppName(t *testing.T) {
	for _, cluster := range []string{"", "16/main"} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
		s1, s2 := t0.Add(-time.Hour), t0.Add(-2*time.Hour)
		rows := []checker.Replica{{ApplicationName: "node2", ClientAddr: "10.0.0.2"}}
		n2 := rcReplica(cluster, 1, 1000, s2, "")
		n2.ReceiveTimeline, n2.UpstreamPort, n2.ReceiverHidden = 0, 0, true
		ms := 0
		round := rounds(&ms)
		round(func() {
			c.CheckOK(1, rcWritable(cluster, 1, 1000, s1, rows...), at(ms+1), at(ms+2), "10.0.0.1")
		}, func() {
			c.CheckOK(2, n2, at(ms+3), at(ms+4), "10.0.0.2")
		})
		if m := c.Elected().Master; m == nil || m.ID != 1 {
			t.Fatalf("%q: setup: n1 must be master: %+v", cluster, c.Elected())
		}
		if x := c.Node(2); x.Role == RoleDetached {
			t.Errorf("cluster_name %q: n2, the master's only walsender row from its address (application_name node2), is detached: %q",
				cluster, x.Detached)
		}
	}
}

// TestReplicationRoleCheckUserNoWalreceiverIsNotAnotherClientsRow: the
// check user is the replication role, as above, but n2's walreceiver does
// not run (its upstream refuses it, or it replays from the archive): its
// pg_stat_wal_receiver is empty, not hidden. On n2's host
// pg_receivewal streams from the master as the same role, under its own
// application_name. That row is not n2's: n2 follows nobody.
func TestReplicationRoleCheckUserNoWalreceiverIsNotAnotherClientsRow(t *testing.T) {
	for _, hidden := range []bool{false, true} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
		s1, s2 := t0.Add(-time.Hour), t0.Add(-2*time.Hour)
		rows := []checker.Replica{{ApplicationName: "pg_receivewal", ClientAddr: "10.0.0.2"}}
		n2 := rcReplica("", 1, 1000, s2, "")
		n2.ReceiveTimeline, n2.UpstreamPort, n2.ReceiverHidden = 0, 0, hidden
		ms := 0
		round := rounds(&ms)
		round(func() {
			c.CheckOK(1, rcWritable("", 1, 1000, s1, rows...), at(ms+1), at(ms+2), "10.0.0.1")
		}, func() {
			c.CheckOK(2, n2, at(ms+3), at(ms+4), "10.0.0.2")
		})
		if m := c.Elected().Master; m == nil || m.ID != 1 {
			t.Fatalf("setup: n1 must be master: %+v", c.Elected())
		}
		x := c.Node(2)
		switch {
		case !hidden && x.Role != RoleDetached:
			t.Errorf("no walreceiver on n2, pg_receivewal's row from its host: n2 is %v (lag %d bytes known %v), want detached",
				x.Role, x.LagBytes, x.LagKnown)
		case hidden && x.Role == RoleDetached:
			// Control: with a walreceiver running hidden, the one row from
			// its host may be its own (its primary_conninfo may name it
			// anything).
			t.Errorf("a hidden walreceiver on n2 and one row from its host: n2 is detached: %q", x.Detached)
		}
	}
}
