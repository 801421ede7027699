package topology

import (
	"errors"
	"testing"
	"time"
)

// n2's server, reached at node 2 and (by a second name) at node 3, is the
// master's sync standby. Node 2's check finds it down at 0.1s; at 0.15s
// node 3's check finds the same server up (no restart: the same start
// time). The master, in sight, last read its walsenders at 0.001s, before
// the down. Seen at node 2 alone, this is the down and back that makes a
// replica RoleReplica until the master's walsenders are read again (see
// sync_down_row_test.go): while the server was out of reach the master may
// have named n3 synchronous and acknowledged commits n2 lacks. Seen at its
// second address, the same server must not be sync on the same old row.
func TestServerBackAtAnotherAddressNotSyncOnRowsReadBeforeItWentDown(t *testing.T) {
	c := aliasedSync(t)
	c.CheckFailed(2, errors.New("connection refused"), false, at(100))
	c.CheckOK(3, replica("n2", 1, 1, 1000), at(150), at(151), "10.0.0.2")
	c.TakeReady()
	for _, id := range []ID{2, 3} {
		x := c.Node(id)
		if x.Up && x.AliasOf == nil && x.Role == RoleSyncReplica {
			t.Fatalf("n2's server went down at 0.1s (seen at node 2), answered again at 0.15s at node %d (%s), the master's walsenders last read at 0.001s: role %s, sync state %q, sync unknown %q; want no sync role until the master lists it again",
				x.ID, x.Addr, x.Role, x.SyncState, x.SyncUnknown)
		}
	}
}

// n2's server restarts (a hot standby opens at its consistent point, behind
// what it had flushed and the master had acknowledged); node 3, its second
// address, sees the new server first, and stands for the same server as
// node 2 until node 2 is checked again. The master, in sight, last read
// its walsenders before the restart: the row that says sync is the
// walsender of the server before. Seen at node 2, the restart makes n2
// RoleReplica until the master's walsenders are read again (see
// sync_restart_row_test.go); seen at node 3 first, the server that routing
// reaches at node 2's address must not be sync on that row either.
func TestServerRestartedSeenAtAnotherAddressNotSyncOnARowFromBeforeItsRestart(t *testing.T) {
	c := aliasedSync(t)
	r := replica("n2", 1, 1, 900)
	r.StartTime = r.StartTime.Add(time.Minute)
	c.CheckOK(3, r, at(201), at(202), "10.0.0.2")
	c.TakeReady()
	for _, id := range []ID{2, 3} {
		x := c.Node(id)
		if x.Role == RoleSyncReplica {
			rep := "its own representative"
			if x.AliasOf != nil {
				rep = "alias of node " + uitoa(uint32(x.AliasOf.ID))
			}
			t.Fatalf("n2's server restarted at 0.2s (seen at node 3), the master's walsenders last read at 0.001s: node %d (%s, %s) role %s, sync state %q, lag %d bytes; want no sync role until the master lists the new server",
				x.ID, x.Addr, rep, x.Role, x.SyncState, x.LagBytes)
		}
	}
}
