package topology

import (
	"errors"
	"testing"
	"time"
)

// n2's server, reached at node 2 and (by a second name) at node 3, is the
// master's sync standby. It restarted once; node 2's check that finds the
// new run begins at 0.25s and answers at 0.32s. Meanwhile the master reads
// its walsenders at 0.26s (n2 sync), and node 3's check finds the server
// down at 0.3s: the core takes walsender rows read before 0.3s for the
// run before (serverLeft sets node 2's backSince to 0.3s). Node 2's answer
// then puts backSince back to 0.25s, its check's beginning, and the row
// read at 0.26s, before the down, makes n2 sync. Had node 2's check found
// the same run as before, backSince would have stayed at 0.3s and n2
// would not be sync: a restart seen in a check begun before the down must
// not take that down back.
func TestDownSeenAtAnAliasNotUndoneByARestartSeenInACheckBegunBefore(t *testing.T) {
	c := aliasedSync(t)
	m := master(1, 1100, "n2")
	m.Replicas[0].SyncState = "sync"
	c.CheckOK(1, m, at(260), at(261), "10.0.0.1")
	c.CheckFailed(3, errors.New("connection refused"), false, at(300))
	c.TakeReady()
	if x := c.Node(2); x.Role == RoleSyncReplica {
		t.Fatalf("setup: node 2 sync right after the down seen at node 3: %s", x.Role)
	}
	r := replica("n2", 1, 1, 1050)
	r.StartTime = r.StartTime.Add(time.Minute) // the run after a restart before 0.25s
	c.CheckOK(2, r, at(250), at(320), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Role == RoleSyncReplica {
		t.Fatalf("n2's server seen down at node 3 at 0.3s; the master's walsenders last read at 0.26s; node 2's check begun at 0.25s found the server's new run: role %s, sync state %q, backSince %s; want no sync role until the master reads its walsenders after 0.3s",
			x.Role, x.SyncState, sinceText(x))
	}
}

// Control: the same, node 2's check finding the run it found before.
func TestDownSeenAtAnAliasHoldsAgainstACheckBegunBefore(t *testing.T) {
	c := aliasedSync(t)
	m := master(1, 1100, "n2")
	m.Replicas[0].SyncState = "sync"
	c.CheckOK(1, m, at(260), at(261), "10.0.0.1")
	c.CheckFailed(3, errors.New("connection refused"), false, at(300))
	c.CheckOK(2, replica("n2", 1, 1, 1050), at(250), at(320), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Role == RoleSyncReplica {
		t.Fatalf("role %s, backSince %v", x.Role, sinceText(x))
	}
}
