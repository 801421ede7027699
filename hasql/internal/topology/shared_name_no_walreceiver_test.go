package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// TestStreamingReplicaFollowsBesideANamesakeWithNoWalreceiver: the check
// user has no pg_monitor (the master's rows show names only; a running
// walreceiver shows its pid, its details hidden), and both replicas of
// the connection string go by one cluster_name, "main" (Debian's
// "16/main"). n2 streams from the master, which lists one walsender by
// "main"; n3 runs no walreceiver at all (a standby fed by restore_command
// alone, a delayed copy): its check shows none, hidden or not, so the row
// cannot be its. n2 follows the master for as long as that holds.
func TestStreamingReplicaFollowsBesideANamesakeWithNoWalreceiver(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
	s1, s2, s3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
	hidden := rcReplica("main", 1, 100000, s2, "")
	hidden.ReceiveTimeline, hidden.UpstreamPort, hidden.ReceiverHidden = 0, 0, true
	none := rcReplica("main", 1, 90000, s3, "")
	none.ReceiveTimeline, none.UpstreamPort, none.ReceiveLSN = 0, 0, 0
	row := checker.Replica{ApplicationName: "main"}
	ms := 0
	round := rounds(&ms)
	for range 5 {
		round(func() {
			c.CheckOK(1, rcWritable("main", 1, 100000, s1, row), at(ms+1), at(ms+2), "10.0.0.1")
		}, func() {
			c.CheckOK(2, hidden, at(ms+3), at(ms+4), "10.0.0.2")
		}, func() {
			c.CheckOK(3, none, at(ms+5), at(ms+6), "10.0.0.3")
		})
		c.TakeReady()
	}
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", c.Elected())
	}
	for _, id := range []ID{2, 3} {
		x := c.Node(id)
		t.Logf("n%d: role %v, detached %q", id, x.Role, x.Detached)
	}
	if x := c.Node(2); x.Role == RoleDetached {
		t.Errorf("n2, the one replica of the name with a walreceiver, the master listing one walsender by the name, is detached: %s", x.Detached)
	}
	if x := c.Node(3); x.Role != RoleDetached {
		t.Errorf("n3 runs no walreceiver, yet is %v", x.Role)
	}
}
