package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// TestSyncRowFromADownNamesakesAddressIsNotAnotherReplicas: the check user
// has pg_monitor. n2 and n3, both named in the connection string, go by one
// application_name ("main": a cluster_name every server shares, as
// Patroni's scope or Debian's "16/main"). n3 streams from the master as its
// synchronous standby, but the Manager cannot reach it (its checks fail: a
// partition between the Manager and n3 only). n2 streams from 10.0.0.9, a
// server outside the set. The master's one row by "main", sync, comes from
// n3's address: it is n3's, and n2 must not be claimed sync by it (SyncOnly
// reads would go to a replica the master does not wait for).
func TestSyncRowFromADownNamesakesAddressIsNotAnotherReplicas(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
	s1, s2, s3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
	rows := []checker.Replica{{ApplicationName: "main", ClientAddr: "10.0.0.3", State: "streaming", SyncState: "sync", ReplayLSN: 100000}}
	ms := 0
	round := rounds(&ms)
	// First all three answer: n3 streams from the master, n2 from 10.0.0.9.
	round(func() {
		c.CheckOK(3, rcReplica("main", 1, 100000, s3, "10.0.0.1"), at(ms+1), at(ms+2), "10.0.0.3")
	}, func() {
		c.CheckOK(2, rcReplica("main", 1, 1000, s2, "10.0.0.9"), at(ms+3), at(ms+4), "10.0.0.2")
	}, func() {
		c.CheckOK(1, rcWritable("main", 1, 100000, s1, rows...), at(ms+5), at(ms+6), "10.0.0.1")
	})
	// Then the Manager loses n3; the master still lists it, sync.
	round(func() {
		c.CheckFailed(3, errors.New("dial tcp 10.0.0.3:5432: i/o timeout"), false, at(ms+1))
	}, func() {
		c.CheckOK(2, rcReplica("main", 1, 1000, s2, "10.0.0.9"), at(ms+3), at(ms+4), "10.0.0.2")
	}, func() {
		c.CheckOK(1, rcWritable("main", 1, 100000, s1, rows...), at(ms+5), at(ms+6), "10.0.0.1")
	})
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", c.Elected())
	}
	for _, id := range []ID{2, 3} {
		x := c.Node(id)
		t.Logf("n%d: up %v role %v, detached %q, sync unknown %q, lag %d bytes known %v", id, x.Up, x.Role, x.Detached, x.SyncUnknown, x.LagBytes, x.LagKnown)
	}
	if x := c.Node(2); x.Role == RoleSyncReplica {
		t.Errorf("n2 streams from 10.0.0.9; the master's one sync row by its name comes from n3's address, yet n2 is claimed sync")
	}
}
