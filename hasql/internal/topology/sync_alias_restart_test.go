package topology

import (
	"errors"
	"testing"
	"time"
)

// aliasedSync is n1 master with n2 sync, n2's server reached at node 2 and,
// by a second name, at node 3 (an alias of node 2).
func aliasedSync(t *testing.T) *Core {
	t.Helper()
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	m := master(1, 1000, "n2")
	m.Replicas[0].SyncState = "sync"
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 1000), at(3), at(4), "10.0.0.2")
	c.CheckOK(3, replica("n2", 1, 1, 1000), at(3), at(5), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(3); x.AliasOf == nil || x.AliasOf.ID != 2 || c.Node(2).Role != RoleSyncReplica {
		t.Fatalf("setup: node 3 alias of %v, node 2 role %s", x.AliasOf, c.Node(2).Role)
	}
	return c
}

// lastSyncNodes are the nodes the shell's PreferMaster takes first with no
// master known (hasql/view.go lastSync).
func lastSyncNodes(c *Core) []ID {
	var out []ID
	for _, x := range c.Nodes() {
		if x.AliasOf == nil && x.Up && x.Role == RoleReplica && x.SyncState == "sync" {
			out = append(out, x.ID)
		}
	}
	return out
}

// The master goes out of sight; then the sync replica's server restarts
// (a standby restarted after a crash opens behind what it had replayed,
// and the master may have named another standby sync meanwhile). Its
// second address sees the new server first. The restart is known: no
// address of that server may stand among PreferMaster's first choice as
// the server the last master called sync.
func TestSyncStateForgottenWhenTheRestartIsSeenAtAnotherAddress(t *testing.T) {
	c := aliasedSync(t)
	c.CheckFailed(1, errors.New("connection refused"), false, at(100))
	r := replica("n2", 1, 1, 900)
	r.StartTime = r.StartTime.Add(time.Minute)
	c.CheckOK(3, r, at(201), at(202), "10.0.0.2")
	c.TakeReady()
	if ids := lastSyncNodes(c); len(ids) > 0 {
		x := c.Node(ids[0])
		t.Fatalf("the server restarted (seen at node 3), no master known: node %d (%s) role %s, sync state %q, sync unknown %q: still taken as the one the last master called sync",
			x.ID, x.Addr, x.Role, x.SyncState, x.SyncUnknown)
	}
}

// The same with the server going down, seen at its first address: the
// second address, not checked since, still answers for a server that went
// down, and keeps the sync state copied from the first.
func TestSyncStateForgottenWhenTheDownIsSeenAtAnotherAddress(t *testing.T) {
	c := aliasedSync(t)
	c.CheckFailed(1, errors.New("connection refused"), false, at(100))
	c.CheckFailed(2, errors.New("connection refused"), false, at(150))
	c.TakeReady()
	if ids := lastSyncNodes(c); len(ids) > 0 {
		x := c.Node(ids[0])
		t.Fatalf("the server went down (seen at node 2), no master known: node %d (%s) role %s, sync state %q, sync unknown %q: still taken as the one the last master called sync",
			x.ID, x.Addr, x.Role, x.SyncState, x.SyncUnknown)
	}
}
