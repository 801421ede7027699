package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// TestCascadeOfOneNameFollowsWithARowAtEachUpstream: the check user has no
// pg_monitor (rows show names only, walreceivers are hidden), and both
// replicas of the connection string go by one cluster_name, "main"
// (Debian's "16/main"). n2 streams from the master, n3 cascades from n2:
// the master lists one walsender by "main", n2 lists one. Every node of
// the name has a row somewhere in the tree: both follow the master, and
// neither is to be detached for as long as the tree stays so.
func TestCascadeOfOneNameFollowsWithARowAtEachUpstream(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
	s1, s2, s3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
	hidden := func(lsn checker.LSN, start time.Time, rows ...checker.Replica) checker.Result {
		r := rcReplica("main", 1, lsn, start, "")
		r.ReceiveTimeline, r.UpstreamPort, r.ReceiverHidden = 0, 0, true
		r.Replicas = rows
		return r
	}
	row := checker.Replica{ApplicationName: "main"}
	ms := 0
	round := rounds(&ms)
	for range 5 {
		round(func() {
			c.CheckOK(1, rcWritable("main", 1, 100000, s1, row), at(ms+1), at(ms+2), "10.0.0.1")
		}, func() {
			c.CheckOK(2, hidden(100000, s2, row), at(ms+3), at(ms+4), "10.0.0.2")
		}, func() {
			c.CheckOK(3, hidden(100000, s3), at(ms+5), at(ms+6), "10.0.0.3")
		})
		c.TakeReady()
	}
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", c.Elected())
	}
	for _, id := range []ID{2, 3} {
		x := c.Node(id)
		t.Logf("n%d: role %v, detached %q", id, x.Role, x.Detached)
		if x.Role == RoleDetached {
			t.Errorf("n%d is detached though the master and n2 each list one walsender by \"main\", one per replica of the name: %s", id, x.Detached)
		}
	}
}
