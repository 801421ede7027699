package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// TestReplicaSharingTheMastersHostFollowsItThroughAnotherAddress: the
// master n1 and replica n2 run on one machine (ports 5432 and 5433), which
// the application reaches at set (the connection string). n2's
// primary_conninfo names the machine by another of its addresses,
// upstream: the loopback address, or the machine's address on a separate
// replication network. A connection to the machine's own address comes
// from that address, so n1 shows the walsender row "n2" from upstream,
// and n2's walreceiver shows sender_host upstream. (The same holds for a
// replica in a container that reaches the master through the host's
// published port: the bridge gateway is both the sender host and the
// client address.)
//
// n2 streams from the master, listed by its own name: it is a replica of
// n1, sync as n1 says.
func TestReplicaSharingTheMastersHostFollowsItThroughAnotherAddress(t *testing.T) {
	for _, tc := range []struct{ set, upstream string }{
		{"10.0.0.5", "127.0.0.1"},
		{"192.0.2.5", "10.0.0.5"},
	} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{
			{ID: 1, Addr: tc.set + ":5432", Host: tc.set, Trusted: true},
			{ID: 2, Addr: tc.set + ":5433", Host: tc.set, Trusted: true},
		})
		s1, s2 := t0.Add(-time.Hour), t0.Add(-2*time.Hour)
		rows := []checker.Replica{{ApplicationName: "n2", ClientAddr: tc.upstream, State: "streaming", SyncState: "sync", ReplayLSN: 1000}}
		ms := 0
		round := rounds(&ms)
		round(func() {
			c.CheckOK(1, rcWritable("n1", 1, 1000, s1, rows...), at(ms+1), at(ms+2), tc.set)
		}, func() {
			c.CheckOK(2, rcReplica("n2", 1, 1000, s2, tc.upstream), at(ms+3), at(ms+4), tc.set)
		})
		if m := c.Elected().Master; m == nil || m.ID != 1 {
			t.Fatalf("%s via %s: setup: n1 must be master: %+v", tc.set, tc.upstream, c.Elected())
		}
		if x := c.Node(2); x.Role != RoleSyncReplica {
			t.Errorf("%s via %s: n2 streams from n1, which lists it by name as sync: n2 is %v (detached %q, sync state %q)",
				tc.set, tc.upstream, x.Role, x.Detached, x.SyncState)
		}
	}
}
