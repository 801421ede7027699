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
		n2.ReceiveTimeline, n2.UpstreamPort = 0, 0
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
