package topology

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// A member its source names anew keeps its ID (a node of the connection
// string keeps its pool: the shell re-describes it in place), and what the
// core knew of it by the old name does not carry over: vouching is earned
// again under the new description, and sync is claimed only from the
// master's walsender rows read after the rename.

// hiddenReplica is a replica whose check cannot see its walreceiver (a
// check user without pg_monitor): its row among the master's walsenders is
// found by its member's name alone.
func hiddenReplica(name string, start time.Time) checker.Result {
	r := rcReplica(name, 1, 1000, start, "")
	r.ReceiveTimeline, r.UpstreamPort, r.ReceiverHidden = 0, 0, true
	return r
}

// renamedSet is n1 (no name), n2 named a and n3 named b by their source,
// all of the connection string, n2 and n3 checked before the master read
// its walsenders: a sync, b potential. n2 is sync.
func renamedSet(t *testing.T) *Core {
	t.Helper()
	c := New(Config{})
	c.SetMembers(at(0), named(members(3), "", "a", "b"))
	c.CheckOK(2, hiddenReplica("n2", t0.Add(-time.Hour)), at(1), at(2), "10.0.0.2")
	c.CheckOK(3, hiddenReplica("n3", t0.Add(-2*time.Hour)), at(1), at(2), "10.0.0.3")
	c.CheckOK(1, rcWritable("n1", 1, 1000, t0.Add(-3*time.Hour),
		checker.Replica{ApplicationName: "a", SyncState: "sync", ClientAddr: "10.0.0.2", State: "streaming", ReplayLSN: 1000},
		checker.Replica{ApplicationName: "b", SyncState: "potential", ClientAddr: "10.0.0.3", State: "streaming", ReplayLSN: 1000}),
		at(3), at(4), "10.0.0.1")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica {
		t.Fatalf("setup: n2 role %s (%s %s), want sync", x.Role, x.Detached, x.SyncUnknown)
	}
	if x := c.Node(3); x.Role != RoleAsyncReplica {
		t.Fatalf("setup: n3 role %s (%s %s), want async", x.Role, x.Detached, x.SyncUnknown)
	}
	return c
}

// named returns ms with the names given, in order.
func named(ms []Member, names ...string) []Member {
	for i := range ms {
		ms[i].Name = names[i]
	}
	return ms
}

// The source swaps the names of n2 and n3 (it was behind, the pods swapped
// addresses): the row by n3's new name, a, read before the rename, said
// sync of the server that went by a then. n3 is not sync on it, nor keeps
// n2 the sync state of its old name; the master keeps its role and its
// connections, named too; the master's next check reads its walsenders,
// and what they say then holds under the new names.
func TestMemberRenamedIsNotSyncOnRowsReadBefore(t *testing.T) {
	c := renamedSet(t)
	c.SetMembers(at(10), named(members(3), "pg-a", "b", "a"))
	r := c.TakeReady()
	if len(r.Cut) > 0 || len(r.Reset) > 0 {
		t.Fatalf("a rename cut %v and reset %v: the nodes are the same", r.Cut, r.Reset)
	}
	if x := c.Node(1); x.Role != RoleMaster || !x.Vouched || x.Name() != "pg-a" {
		t.Fatalf("n1 renamed pg-a: role %s, vouched %v, name %q; want the master, vouched (the user named it)", x.Role, x.Vouched, x.Name())
	}
	for id, name := range map[ID]string{2: "b", 3: "a"} {
		x := c.Node(id)
		if x.Name() != name || !x.Vouched {
			t.Fatalf("node %d: name %q, vouched %v; want %q, vouched", id, x.Name(), x.Vouched, name)
		}
		if x.Role == RoleSyncReplica || x.SyncState == "sync" {
			t.Fatalf("node %d renamed %s, the master's walsenders read before: role %s, sync state %q; want no sync claim until the master lists it again",
				id, name, x.Role, x.SyncState)
		}
	}
	if !c.WantReplicas(1, at(20), 100*time.Millisecond) {
		t.Fatal("the master's next check does not read its walsenders after a rename")
	}

	// Read after the rename: a (n3) is sync now.
	c.CheckOK(1, rcWritable("n1", 1, 1000, t0.Add(-3*time.Hour),
		checker.Replica{ApplicationName: "a", SyncState: "sync", ClientAddr: "10.0.0.3", State: "streaming", ReplayLSN: 1000},
		checker.Replica{ApplicationName: "b", SyncState: "potential", ClientAddr: "10.0.0.2", State: "streaming", ReplayLSN: 1000}),
		at(20), at(21), "10.0.0.1")
	c.TakeReady()
	if x := c.Node(3); x.Role != RoleSyncReplica || x.SyncState != "sync" {
		t.Fatalf("n3 (a) after the master's read: role %s, sync state %q (%s); want sync", x.Role, x.SyncState, x.SyncUnknown)
	}
	if x := c.Node(2); x.Role != RoleAsyncReplica || x.SyncState != "potential" {
		t.Fatalf("n2 (b) after the master's read: role %s, sync state %q (%s); want async, potential", x.Role, x.SyncState, x.SyncUnknown)
	}
}

// With no master to tell, a replica keeps the sync state the last master
// said, but not once renamed: that was said of the row by its old name.
func TestMemberRenamedWithNoMasterDropsTheOldSyncState(t *testing.T) {
	c := renamedSet(t)
	c.CheckFailed(1, errors.New("connection refused"), false, at(10))
	c.TakeReady()
	if x := c.Node(2); x.SyncState != "sync" {
		t.Fatalf("setup: n2's sync state with no master %q, want the last master's, sync", x.SyncState)
	}
	c.SetMembers(at(20), named(members(3), "", "c", "b"))
	c.TakeReady()
	if x := c.Node(2); x.SyncState != "" || x.Role == RoleSyncReplica {
		t.Fatalf("n2 renamed c with no master known: role %s, sync state %q; want none said of c", x.Role, x.SyncState)
	}
}

// A member nothing vouches for (not of the connection string) earns it
// again under its new name: listed from its address by the old name, it
// is not vouched for by that row once renamed, and is by the master's row
// by the new name.
func TestMemberRenamedEarnsVouchingAgain(t *testing.T) {
	c := New(Config{})
	m2 := rcMember(2, "10.0.0.2", false)
	m2.Name = "a"
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), m2})
	c.CheckOK(2, rcReplica("n2", 1, 1000, t0.Add(-time.Hour), "10.0.0.1"), at(1), at(2), "10.0.0.2")
	c.CheckOK(1, rcWritable("n1", 1, 1000, t0.Add(-3*time.Hour),
		checker.Replica{ApplicationName: "a", SyncState: "async", ClientAddr: "10.0.0.2", State: "streaming", ReplayLSN: 1000}),
		at(3), at(4), "10.0.0.1")
	c.TakeReady()
	if x := c.Node(2); !x.Vouched || x.Role != RoleAsyncReplica {
		t.Fatalf("setup: n2 vouched %v, role %s (%s); want vouched, async", x.Vouched, x.Role, x.Detached)
	}
	m2.Name = "c"
	c.SetMembers(at(10), []Member{rcMember(1, "10.0.0.1", true), m2})
	c.TakeReady()
	if x := c.Node(2); x.Vouched || x.Role.IsReplica() {
		t.Fatalf("n2 renamed c, listed only as a: vouched %v, role %s; want neither vouched nor serving reads", x.Vouched, x.Role)
	}
	c.CheckOK(1, rcWritable("n1", 1, 1000, t0.Add(-3*time.Hour),
		checker.Replica{ApplicationName: "c", SyncState: "async", ClientAddr: "10.0.0.2", State: "streaming", ReplayLSN: 1000}),
		at(20), at(21), "10.0.0.1")
	c.TakeReady()
	if x := c.Node(2); !x.Vouched || x.Role != RoleAsyncReplica {
		t.Fatalf("n2 listed as c: vouched %v, role %s (%s); want vouched, async", x.Vouched, x.Role, x.Detached)
	}
}

// A host of the connection string the source names late (a Patroni first
// look slower than the first checks) is not sync on rows read before, and
// its sync state says why: the rows were read before it took its name, not
// before it came back (it never went away). No warning is logged for it:
// the master's next check reads the rows.
func TestMemberNamedLateSaysWhyItsSyncStateIsUnknown(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	c.CheckOK(2, rcReplica("a", 1, 1000, t0.Add(-time.Hour), "10.0.0.1"), at(1), at(2), "10.0.0.2")
	c.CheckOK(1, rcWritable("n1", 1, 1000, t0.Add(-3*time.Hour),
		checker.Replica{ApplicationName: "a", SyncState: "sync", ClientAddr: "10.0.0.2", State: "streaming", ReplayLSN: 1000}),
		at(3), at(4), "10.0.0.1")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica {
		t.Fatalf("setup: n2 role %s (%s %s), want sync", x.Role, x.Detached, x.SyncUnknown)
	}
	c.SetMembers(at(10), named(members(2), "pg-1", "a"))
	r := c.TakeReady()
	x := c.Node(2)
	if x.Role != RoleReplica || x.SyncState != "" {
		t.Fatalf("n2 named a, the master's walsenders read before: role %s (%s), sync state %q; want replica, sync state unknown",
			x.Role, x.Detached, x.SyncState)
	}
	if !strings.Contains(x.SyncUnknown, "name") || strings.Contains(x.SyncUnknown, "came back") {
		t.Fatalf("n2 named a: sync unknown %q; want it to say the rows were read before it took its name", x.SyncUnknown)
	}
	if logged(r, "sync state unknown") {
		t.Fatalf("a rename logged a warning: %+v", r.Logs)
	}
}
