package topology

import (
	"errors"
	"testing"
	"time"
)

// syncTrio is n1 master with n2 sync and n3 async, each checked once.
func syncTrio(t *testing.T) *Core {
	t.Helper()
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	m := master(1, 1000, "n2", "n3")
	m.Replicas[0].SyncState = "sync"
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 1000), at(3), at(4), "10.0.0.2")
	r3 := replica("n3", 1, 1, 1000)
	r3.StartTime = at(-7000)
	c.CheckOK(3, r3, at(3), at(4), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica || x.SyncState != "sync" {
		t.Fatalf("n2: role %s sync state %q, want sync", x.Role, x.SyncState)
	}
	return c
}

// A sync replica went down; the master named n3 synchronous and
// acknowledged commits n2 never received; then the master went out of
// sight and n2 came back. What the last master said of n2 was said before
// n2 went down: n2 must not stand among the replicas the last master listed
// as sync (PreferMaster's first choice with no master), beside n3.
func TestSyncStateForgottenWhenTheReplicaWentDown(t *testing.T) {
	c := syncTrio(t)
	c.CheckFailed(2, errors.New("connection refused"), false, at(100))
	m := master(1, 5000, "n3")
	m.Replicas[0].SyncState = "sync"
	c.CheckOK(1, m, at(101), at(102), "10.0.0.1")
	r3 := replica("n3", 1, 1, 5000)
	r3.StartTime = at(-7000)
	c.CheckOK(3, r3, at(103), at(104), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(3); x.Role != RoleSyncReplica {
		t.Fatalf("n3: role %s, want sync", x.Role)
	}
	c.CheckFailed(1, errors.New("connection refused"), false, at(200))
	c.CheckOK(2, replica("n2", 1, 1, 1000), at(201), at(202), "10.0.0.2")
	c.TakeReady()
	x := c.Node(2)
	if x.Role != RoleReplica || x.SyncState == "sync" {
		t.Fatalf("n2, down while the master named n3 sync, back with no master known: role %s, sync state %q; want replica with no sync state",
			x.Role, x.SyncState)
	}
	if y := c.Node(3); y.SyncState != "sync" {
		t.Fatalf("n3: sync state %q, want sync (what the last master said while it was up)", y.SyncState)
	}
}

// The same through a restart of n2's server (a new postmaster start time)
// between two checks, with no failed check seen: the server that answers
// is not the one the master listed.
func TestSyncStateForgottenWhenTheReplicaRestarted(t *testing.T) {
	c := syncTrio(t)
	c.CheckFailed(1, errors.New("connection refused"), false, at(100))
	r := replica("n2", 1, 1, 1000)
	r.StartTime = r.StartTime.Add(time.Minute)
	c.CheckOK(2, r, at(201), at(202), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.SyncState == "sync" {
		t.Fatalf("n2 restarted with no master known: role %s, sync state %q; want no sync state", x.Role, x.SyncState)
	}
}

// While no master is known, a sync replica's sync state stays unknown, with
// its reason, for as long as no master is known: not only at the first
// rebuild.
func TestSyncUnknownKeptWhileNoMaster(t *testing.T) {
	c := syncTrio(t)
	c.CheckFailed(1, errors.New("connection refused"), false, at(100))
	for i := 0; i < 3; i++ {
		c.CheckOK(2, replica("n2", 1, 1, 1000), at(201+10*i), at(202+10*i), "10.0.0.2")
		c.TakeReady()
		x := c.Node(2)
		if x.Role != RoleReplica || x.SyncUnknown != syncUnknownNoMaster || x.SyncState != "sync" {
			t.Fatalf("check %d with no master: n2 role %s, sync unknown %q, sync state %q; want replica, %q, sync",
				i, x.Role, x.SyncUnknown, x.SyncState, syncUnknownNoMaster)
		}
	}
}
