package topology

import (
	"errors"
	"testing"
)

// n2, the master's sync standby, goes down and comes back before the
// master's next check; then the master goes out of sight. While n2 was
// down the master may have named n3 synchronous and acknowledged commits
// n2 never received: the walsender rows that call n2 sync were read
// before it went down, and say nothing of whether the master waited for
// it since. Its sync state, forgotten when it went down, must not come
// back from them.
func TestSyncStateNotRestoredFromRowsReadBeforeTheReplicaWentDown(t *testing.T) {
	c := syncTrio(t)
	c.CheckFailed(2, errors.New("connection refused"), false, at(100))
	c.CheckOK(2, replica("n2", 1, 1, 1000), at(150), at(151), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Role == RoleSyncReplica {
		t.Logf("n2 back before the master's next check: role %s on the master's rows read at 0.001s, before it went down", x.Role)
	}
	c.CheckFailed(1, errors.New("connection refused"), false, at(200))
	c.TakeReady()
	if x := c.Node(2); x.Role == RoleReplica && x.SyncState == "sync" {
		t.Fatalf("n2 went down at 0.1s, back at 0.15s, the master out of sight at 0.2s (walsenders last read at 0.001s): role %s, sync state %q; want no sync state",
			x.Role, x.SyncState)
	}
}

// The same with the master in sight: n2 is back before the master's
// walsenders are read again, and the only row that calls it sync was read
// before it went down. While it was down the master may have taken n3 as
// synchronous and acknowledged commits n2 lacks (n2 in catchup when it
// reconnects): SyncOnly reads must not go to n2 on that row.
func TestReplicaBackFromDownNotSyncOnRowsReadBeforeItWentDown(t *testing.T) {
	c := syncTrio(t)
	c.CheckFailed(2, errors.New("connection refused"), false, at(100))
	c.CheckOK(2, replica("n2", 1, 1, 1000), at(150), at(151), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Role == RoleSyncReplica {
		t.Fatalf("n2 down at 0.1s, back at 0.15s, the master's walsenders last read at 0.001s: role %s, sync state %q; want no sync role until the master lists it again",
			x.Role, x.SyncState)
	}
}
