package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// TestReplicaNotStreamingIsNotAnotherClientsRow: replica n3 has no
// walreceiver (its primary_conninfo broken, the master's pg_hba refuses it,
// or it replays from the archive): no walsender of the master serves it.
// On n3's host runs another client of the master, pg_receivewal (or
// barman's receive-wal), as backup setups do, named in
// synchronous_standby_names ("pg_receivewal --synchronous"). The master's
// only row from n3's address is that client's, under its own
// application_name. n3 is not listed by a walsender: it must be detached,
// and never claimed sync on the strength of another client's row.
func TestReplicaNotStreamingIsNotAnotherClientsRow(t *testing.T) {
	for _, state := range []string{"sync", "async", "quorum"} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
		s1, s2, s3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
		rows := []checker.Replica{
			{ApplicationName: "n2", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "async", ReplayLSN: 1000},
			{ApplicationName: "pg_receivewal", ClientAddr: "10.0.0.3", State: "streaming", SyncState: state},
		}
		n3 := rcReplica("n3", 1, 800, s3, "")
		n3.ReceiveTimeline, n3.UpstreamPort = 0, 0
		ms := 0
		round := rounds(&ms)
		round(func() {
			c.CheckOK(1, rcWritable("n1", 1, 1000, s1, rows...), at(ms+1), at(ms+2), "10.0.0.1")
		}, func() {
			c.CheckOK(2, rcReplica("n2", 1, 1000, s2, "10.0.0.1"), at(ms+3), at(ms+4), "10.0.0.2")
		}, func() {
			c.CheckOK(3, n3, at(ms+5), at(ms+6), "10.0.0.3")
		})
		if m := c.Elected().Master; m == nil || m.ID != 1 {
			t.Fatalf("%s: setup: n1 must be master: %+v", state, c.Elected())
		}
		if x := c.Node(2); x.Role != RoleAsyncReplica {
			t.Fatalf("%s: setup: n2 must be an async replica: %v %q", state, x.Role, x.Detached)
		}
		if x := c.Node(3); x.Role != RoleDetached {
			t.Errorf("%s row of pg_receivewal from n3's host: n3, which streams from no walsender, is %v (sync state %q, lag %d bytes known %v), want detached",
				state, x.Role, x.SyncState, x.LagBytes, x.LagKnown)
		}
	}
}

// TestCascadingReplicaIsNotAnotherClientsRow: n3 streams from replica n2
// (cascading: the master never waits for it), and on n3's host a
// pg_receivewal --synchronous streams from the master, first in
// synchronous_standby_names. The master's row from n3's address is
// pg_receivewal's, under its own name: n3 must not be claimed sync (nor
// quorum) on the strength of it.
func TestCascadingReplicaIsNotAnotherClientsRow(t *testing.T) {
	for _, state := range []string{"sync", "quorum"} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
		s1, s2, s3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
		rows := []checker.Replica{
			{ApplicationName: "n2", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "async", ReplayLSN: 1000},
			{ApplicationName: "pg_receivewal", ClientAddr: "10.0.0.3", State: "streaming", SyncState: state},
		}
		n2 := rcReplica("n2", 1, 1000, s2, "10.0.0.1")
		n2.Replicas = []checker.Replica{{ApplicationName: "n3", ClientAddr: "10.0.0.3", State: "streaming", SyncState: "async", ReplayLSN: 1000}}
		ms := 0
		round := rounds(&ms)
		round(func() {
			c.CheckOK(1, rcWritable("n1", 1, 1000, s1, rows...), at(ms+1), at(ms+2), "10.0.0.1")
		}, func() {
			c.CheckOK(2, n2, at(ms+3), at(ms+4), "10.0.0.2")
		}, func() {
			c.CheckOK(3, rcReplica("n3", 1, 1000, s3, "10.0.0.2"), at(ms+5), at(ms+6), "10.0.0.3")
		})
		if m := c.Elected().Master; m == nil || m.ID != 1 {
			t.Fatalf("%s: setup: n1 must be master: %+v", state, c.Elected())
		}
		if x := c.Node(3); x.Role != RoleAsyncReplica {
			t.Errorf("%s row of pg_receivewal from n3's host: n3, cascading from n2, is %v (sync state %q), want async",
				state, x.Role, x.SyncState)
		}
	}
}

// TestOtherClientsRowVouchesForNothing: discovery reports n3 (not named by
// the user) at the address of the backup host, where pg_receivewal streams
// from the master under its own application_name. The server answering
// at n3 (in recovery, no walreceiver, name "n3") is listed by no walsender:
// the master's row from that address names pg_receivewal. Nothing vouches
// for n3; its later claim of a promotion must not take the master's role
// away nor take writes.
func TestOtherClientsRowVouchesForNothing(t *testing.T) {
	otherClientsRowVouchesForNothing(t, "n3", "pg_receivewal")
}

// TestOtherClientsRowVouchesForNothingUnnamed: the same with the server at
// n3 answering under no name at all (cluster_name empty, no walreceiver):
// a name it does not give must not let another client's row be its.
func TestOtherClientsRowVouchesForNothingUnnamed(t *testing.T) {
	otherClientsRowVouchesForNothing(t, "", "barman_receive_wal")
}

// otherClientsRowVouchesForNothing: the server at n3 (not named by the
// user) answers in recovery under name, with no walreceiver; the master's
// row from n3's address is client's. n3 must not be vouched for, and its
// later claim of a promotion must not take the master's role.
func otherClientsRowVouchesForNothing(t *testing.T, name, client string) {
	t.Helper()
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", false)})
	s1, s2, s3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
	rows := []checker.Replica{
		{ApplicationName: "n2", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "async", ReplayLSN: 1000},
		{ApplicationName: client, ClientAddr: "10.0.0.3", State: "streaming", SyncState: "async"},
	}
	n3 := rcReplica(name, 1, 1000, s3, "")
	n3.ReceiveTimeline, n3.UpstreamPort = 0, 0
	ms := 0
	round := rounds(&ms)
	n1 := func() { c.CheckOK(1, rcWritable("n1", 1, 1000, s1, rows...), at(ms+1), at(ms+2), "10.0.0.1") }
	n2 := func() { c.CheckOK(2, rcReplica("n2", 1, 1000, s2, "10.0.0.1"), at(ms+3), at(ms+4), "10.0.0.2") }
	round(n1, n2, func() { c.CheckOK(3, n3, at(ms+5), at(ms+6), "10.0.0.3") })
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", c.Elected())
	}
	if x := c.Node(3); x.Vouched {
		t.Errorf("n3 vouched for by %s's row from its address (role %v)", client, x.Role)
	}
	// The server at n3 claims a promotion.
	round(n1, n2, func() { c.CheckOK(3, rcWritable(name, 2, 1000, s3), at(ms+5), at(ms+6), "10.0.0.3") })
	if m := c.Elected().Master; m == nil || m.ID != 1 || c.Node(1).Stale {
		t.Errorf("n3, vouched for by nothing but another client's row, claimed a promotion: master is node %v, n1 stale %v", idOf(m), c.Node(1).Stale)
	}
}

func idOf(x *Node) any {
	if x == nil {
		return "none"
	}
	return x.ID
}
