package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// TestCascadingReplicaIsNotSyncByAnUpstreamNamesakeOutsideTheSet: every
// server has Debian's default cluster_name "16/main" and no
// primary_conninfo sets application_name, so each walreceiver goes by
// "16/main". The set (the connection string) names the master n1 and
// replica n2; replica n3 (10.0.0.3, a standby in another room that the
// application does not read from) streams from n1, and n2 cascades from
// n3 (its primary_conninfo names 10.0.0.3, which its walreceiver shows).
// synchronous_standby_names = '*' (or 'FIRST 1 ("16/main")'): n1's one
// walsender is n3's, sync, from 10.0.0.3.
//
// The master waits for n3, not for n2, which receives n3's WAL later and
// may lack a commit n1 acknowledged: n2 must not be claimed sync (nor
// quorum), and its lag, at 900 while n1 is at 1000, is not 0: n3's
// replay position on that row is not n2's. It follows the master through
// n3 (async at best).
func TestCascadingReplicaIsNotSyncByAnUpstreamNamesakeOutsideTheSet(t *testing.T) {
	for _, state := range []string{"sync", "quorum"} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
		s1, s2 := t0.Add(-time.Hour), t0.Add(-2*time.Hour)
		rows := []checker.Replica{{ApplicationName: "16/main", ClientAddr: "10.0.0.3", State: "streaming", SyncState: state, ReplayLSN: 1000}}
		ms := 0
		round := rounds(&ms)
		round(func() {
			c.CheckOK(1, rcWritable("16/main", 1, 1000, s1, rows...), at(ms+1), at(ms+2), "10.0.0.1")
		}, func() {
			c.CheckOK(2, rcReplica("16/main", 1, 900, s2, "10.0.0.3"), at(ms+3), at(ms+4), "10.0.0.2")
		})
		if m := c.Elected().Master; m == nil || m.ID != 1 {
			t.Fatalf("%s: setup: n1 must be master: %+v", state, c.Elected())
		}
		if x := c.Node(2); x.Role == RoleSyncReplica || x.Role == RoleQuorumReplica || x.SyncState != "" && x.SyncState != "async" {
			t.Errorf("%s: n2 streams from 10.0.0.3 (outside the set), whose walsender on n1 is the one row of the name: n2 is %v (sync state %q, lag %d bytes known %v), want not sync",
				state, x.Role, x.SyncState, x.LagBytes, x.LagKnown)
		}
		if x := c.Node(2); x.LagKnown && x.LagBytes == 0 {
			t.Errorf("%s: n2 replayed 900, n1 is at 1000: lag 0 bytes known, want 100 or unknown", state)
		}
	}
}

// TestReplicaOnTheMastersMachineUnderASharedNameFollows: the set reaches
// the master at 10.0.0.11 and the replica at 10.0.0.12, addresses of one
// machine (a second interface, loopback aliases); the replica's
// walreceiver streams from the master at 10.0.0.1, an address the set
// does not list, and its walsender row on the master comes from 10.0.0.1
// too. Every server goes by one cluster_name: as far as names and
// addresses tell, the row may be the replica's or that of a standby at
// 10.0.0.1 it cascades from. The replica follows the master, its sync
// state unknown, never detached. (Under a name of its own the row is its
// own: TestReplicaSharingTheMastersHostFollowsItThroughAnotherAddress.)
func TestReplicaOnTheMastersMachineUnderASharedNameFollows(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.11", true), rcMember(2, "10.0.0.12", true)})
	s1, s2 := t0.Add(-time.Hour), t0.Add(-2*time.Hour)
	rows := []checker.Replica{{ApplicationName: "16/main", ClientAddr: "10.0.0.1", State: "streaming", SyncState: "sync", ReplayLSN: 1000}}
	ms := 0
	round := rounds(&ms)
	round(func() {
		c.CheckOK(1, rcWritable("16/main", 1, 1000, s1, rows...), at(ms+1), at(ms+2), "10.0.0.11")
	}, func() {
		c.CheckOK(2, rcReplica("16/main", 1, 1000, s2, "10.0.0.1"), at(ms+3), at(ms+4), "10.0.0.12")
	})
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", c.Elected())
	}
	x := c.Node(2)
	if x.Role != RoleReplica || x.SyncUnknown == "" {
		t.Errorf("n2 streams from the master at an address the set does not list, under the master's name: it is %v (sync unknown %q, detached %q), want a replica of unknown sync state",
			x.Role, x.SyncUnknown, x.Detached)
	}
}
