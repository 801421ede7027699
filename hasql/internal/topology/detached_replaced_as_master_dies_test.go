package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// The server at a replica's address is replaced (another server: a restore
// of an old backup, a rogue, a re-cloned pod) between two master checks;
// the master's next check lists nobody at that address; the master then
// goes down. The new server was never listed by any walsender, its data
// far behind: it was not detached as the master died (see
// TestReplicaDetachedAsTheMasterDiesServesReads), and serves no reads,
// whether the node is of the connection string or not.
func TestReplacedServerDetachedAsTheMasterDiesServesNoReads(t *testing.T) {
	for _, trusted := range []bool{false, true} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", trusted)})
		start1, start2 := t0.Add(-time.Hour), t0.Add(-2*time.Hour)
		row := checker.Replica{ApplicationName: "n2", SyncState: "async", ClientAddr: "10.0.0.2", State: "streaming", ReplayLSN: 1000}
		c.CheckOK(2, rcReplica("n2", 1, 1000, start2, "10.0.0.1"), at(1), at(2), "10.0.0.2")
		c.CheckOK(1, rcWritable("n1", 1, 1000, start1, row), at(3), at(4), "10.0.0.1")
		c.TakeReady()
		if x := c.Node(2); x.Role != RoleAsyncReplica {
			t.Fatalf("setup: n2 role %s (%s) vouched %v", x.Role, x.Detached, x.Vouched)
		}
		// Another server at 10.0.0.2: started a moment ago, another name,
		// no walreceiver, far behind (LSN 10).
		other := rcReplica("restored", 1, 10, t0.Add(400*time.Millisecond), "")
		other.ReceiveTimeline, other.UpstreamPort, other.ReceiveLSN = 0, 0, 0
		c.CheckOK(2, other, at(500), at(501), "10.0.0.2")
		c.CheckOK(1, rcWritable("n1", 1, 5000, start1), at(1002), at(1003), "10.0.0.1")
		c.TakeReady()
		if x := c.Node(2); x.Role != RoleDetached {
			t.Fatalf("trusted=%v: new server not listed: role %s", trusted, x.Role)
		}
		c.CheckFailed(1, errors.New("connection refused"), false, at(1500))
		c.CheckOK(2, other, at(1510), at(1511), "10.0.0.2")
		c.TakeReady()
		x := c.Node(2)
		t.Logf("trusted=%v: master=%v n2 role %s detached=%q vouched=%v", trusted, c.Elected().Master, x.Role, x.Detached, x.Vouched)
		if x.Role != RoleDetached {
			t.Errorf("trusted=%v: a server never listed by any walsender (replaced at the address), LSN 10 vs master's 5000, serves reads: role %s vouched %v", trusted, x.Role, x.Vouched)
		}
	}
}
