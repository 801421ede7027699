package topology

import (
	"errors"
	"testing"
	"time"
)

// n2, the master's sync standby, restarts (a hot standby opens at its
// consistent point, behind what it had flushed and the master had
// acknowledged): it is seen at 0/384 while the master, whose walsenders
// were last read before the restart, is at 0/3E8. The row that says sync
// is the walsender of the server before the restart: the restarted server
// is not known to be waited for until the master's walsenders are read
// again, so SyncOnly reads must not go to it.
func TestRestartedSyncReplicaNotSyncOnARowFromBeforeItsRestart(t *testing.T) {
	c := syncTrio(t)
	r := replica("n2", 1, 1, 900)
	r.StartTime = r.StartTime.Add(time.Minute)
	c.CheckOK(2, r, at(100), at(101), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Role == RoleSyncReplica || x.SyncState == "sync" {
		t.Fatalf("n2 restarted at 0/384, the master (walsenders read before the restart) at 0/3E8: role %s, sync state %q, lag %d bytes; want no sync role until the master lists the new server",
			x.Role, x.SyncState, x.LagBytes)
	}
}

// The same, the master then going out of sight before its next check:
// the sync state the restart forgot is back from the old row, and n2
// stands among PreferMaster's first choice.
func TestRestartedSyncReplicaNotLastSyncOnARowFromBeforeItsRestart(t *testing.T) {
	c := syncTrio(t)
	r := replica("n2", 1, 1, 900)
	r.StartTime = r.StartTime.Add(time.Minute)
	c.CheckOK(2, r, at(100), at(101), "10.0.0.2")
	c.CheckFailed(1, errors.New("connection refused"), false, at(150))
	c.TakeReady()
	if x := c.Node(2); x.Role == RoleReplica && x.SyncState == "sync" {
		t.Fatalf("n2 restarted, then the master went out of sight before reading its walsenders again: role %s, sync state %q; want no sync state",
			x.Role, x.SyncState)
	}
}
