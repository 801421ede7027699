package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// TestOneRowForTwoReplicasOfOneNameFollowsOneAtMost: the check user has no
// pg_monitor, so the master's walsender rows show an application_name and
// nothing else, and each replica's walreceiver is hidden (its Name is its
// cluster_name). Both replicas of the connection string share a
// cluster_name ("main", as Patroni's scope or Debian's "16/main" give every
// server) that their walreceivers go by. The master lists ONE walsender by
// that name: one of the two streams from it, the other does not (its
// walreceiver cannot reach its upstream; it replays nothing new). The row
// cannot say which: at most one of them follows the master, and the core
// must not route reads to both as following it.
func TestOneRowForTwoReplicasOfOneNameFollowsOneAtMost(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
	s1, s2, s3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
	rows := []checker.Replica{{ApplicationName: "main"}}
	hidden := func(lsn checker.LSN, start time.Time) checker.Result {
		r := rcReplica("main", 1, lsn, start, "")
		r.ReceiveTimeline, r.UpstreamPort, r.ReceiverHidden = 0, 0, true
		return r
	}
	ms := 0
	round := rounds(&ms)
	round(func() {
		c.CheckOK(1, rcWritable("main", 1, 100000, s1, rows...), at(ms+1), at(ms+2), "10.0.0.1")
	}, func() {
		c.CheckOK(2, hidden(100000, s2), at(ms+3), at(ms+4), "10.0.0.2")
	}, func() {
		c.CheckOK(3, hidden(1000, s3), at(ms+5), at(ms+6), "10.0.0.3")
	})
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", c.Elected())
	}
	following := 0
	for _, id := range []ID{2, 3} {
		x := c.Node(id)
		t.Logf("n%d: role %v, detached %q, sync unknown %q, lag %d bytes known %v", id, x.Role, x.Detached, x.SyncUnknown, x.LagBytes, x.LagKnown)
		if x.Role != RoleDetached {
			following++
		}
	}
	if following > 1 {
		t.Errorf("the master lists one walsender by application_name \"main\", yet both replicas of that name are taken as following it (%d): one of them streams from nobody and serves reads", following)
	}
}

// TestRowFromOneReplicasAddressIsNotAnothersOfTheSameName: as above, but
// the check user has pg_monitor: the master's one walsender row by
// application_name "main" comes from n2's address, and n2's walreceiver
// streams from the master. n3, of the same cluster_name, streams from a
// server outside the set (10.0.0.9), which is no node's: nothing the
// master shows is n3's, and n3 must not be taken as following it.
func TestRowFromOneReplicasAddressIsNotAnothersOfTheSameName(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
	s1, s2, s3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
	rows := []checker.Replica{{ApplicationName: "main", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "async", ReplayLSN: 100000}}
	ms := 0
	round := rounds(&ms)
	round(func() {
		c.CheckOK(1, rcWritable("main", 1, 100000, s1, rows...), at(ms+1), at(ms+2), "10.0.0.1")
	}, func() {
		c.CheckOK(2, rcReplica("main", 1, 100000, s2, "10.0.0.1"), at(ms+3), at(ms+4), "10.0.0.2")
	}, func() {
		c.CheckOK(3, rcReplica("main", 1, 1000, s3, "10.0.0.9"), at(ms+5), at(ms+6), "10.0.0.3")
	})
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", c.Elected())
	}
	for _, id := range []ID{2, 3} {
		x := c.Node(id)
		t.Logf("n%d: role %v, detached %q, sync unknown %q, lag %d bytes known %v", id, x.Role, x.Detached, x.SyncUnknown, x.LagBytes, x.LagKnown)
	}
	if x := c.Node(3); x.Role != RoleDetached {
		t.Errorf("n3 streams from 10.0.0.9, the master's only row by its name is from n2's address, yet n3 is %v, taken as following the master", x.Role)
	}
}
