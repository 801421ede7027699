package topology

import (
	"errors"
	"testing"
	"time"
)

// aliasBlipThenSync is aliasedSync after node 3 (a second name of n2's
// server) failed one check at 0.05s (the name's path blipped) and the
// master read its walsenders again at 0.06s, calling n2 sync: node 2 is
// sync on a read after everything the core saw leave.
func aliasBlipThenSync(t *testing.T) *Core {
	t.Helper()
	c := aliasedSync(t)
	c.CheckFailed(3, errors.New("connection refused"), false, at(50))
	m := master(1, 1000, "n2")
	m.Replicas[0].SyncState = "sync"
	c.CheckOK(1, m, at(60), at(61), "10.0.0.1")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica {
		t.Fatalf("setup: node 2 role %s, sync unknown %q", x.Role, x.SyncUnknown)
	}
	return c
}

// n2's server restarts at ~0.15s (a standby restarted after a crash opens
// behind what it had replayed). Node 3, which stood for the same server
// until its check failed at 0.05s, comes back at 0.2s and sees the new run
// (same system identifier and name, a new start time; its walreceiver not
// started yet). Node 2 has not been checked since 0.004s. The only row
// that calls n2 sync was read at 0.06s, before the restart: no address of
// that server may be sync on it.
func TestServerRestartSeenAtAnAddressBackFromDownNotSyncOnARowFromBefore(t *testing.T) {
	c := aliasBlipThenSync(t)
	r := replica("n2", 1, 0, 900) // walreceiver not started yet
	r.StartTime = r.StartTime.Add(time.Minute)
	c.CheckOK(3, r, at(200), at(201), "10.0.0.2")
	c.TakeReady()
	for _, id := range []ID{2, 3} {
		x := c.Node(id)
		if x.Up && x.Role == RoleSyncReplica {
			t.Fatalf("n2's server restarted (seen at node 3 at 0.2s, node 3 its alias until its check failed at 0.05s), the master's walsenders last read at 0.06s: node %d (%s) alias of %s, role %s, sync state %q, backSince %s; want no sync role until the master lists the new server",
				x.ID, x.Addr, aliasName(x), x.Role, x.SyncState, sinceText(x))
		}
	}
}

// The same with the master out of sight before the restart: PreferMaster
// must not take node 2 first as the server the last master called sync.
func TestSyncStateForgottenWhenTheRestartIsSeenAtAnAddressBackFromDown(t *testing.T) {
	c := aliasBlipThenSync(t)
	c.CheckFailed(1, errors.New("connection refused"), false, at(100))
	r := replica("n2", 1, 1, 900)
	r.StartTime = r.StartTime.Add(time.Minute)
	c.CheckOK(3, r, at(200), at(201), "10.0.0.2")
	c.TakeReady()
	if ids := lastSyncNodes(c); len(ids) > 0 {
		x := c.Node(ids[0])
		t.Fatalf("n2's server restarted (seen at node 3 at 0.2s, its alias until its check failed at 0.05s), no master known: node %d (%s) role %s, sync state %q: still taken as the server the last master called sync",
			x.ID, x.Addr, x.Role, x.SyncState)
	}
}
