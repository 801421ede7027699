package topology

import (
	"errors"
	"testing"

	"github.com/pgxha/pgxha/checker"
)

// The master n1 goes down; n3 is promoted (seen by its promotion probe:
// master on timeline 2, its walsenders not read yet) and n2's walreceiver
// switches to it. n3 then goes out of sight before a full check. The last
// master is n3, which never listed n2, let alone as sync: what n1 said of
// n2 was said of a master whose timeline ended, and n3 may have
// acknowledged commits (to a standby it named sync) that n2 lacks. n2
// must not stand among PreferMaster's first choice as the replica the
// last master called sync.
func TestSyncStateOfAnEndedTimelineNotKeptWhenTheReplicaFollowsANewerOne(t *testing.T) {
	c := syncTrio(t)
	c.CheckFailed(1, errors.New("connection refused"), false, at(100))
	// n2's walreceiver switched to n3 on timeline 2 before n3's
	// promotion is seen.
	c.CheckOK(2, replica("n2", 2, 2, 1100), at(140), at(141), "10.0.0.2")
	c.PromotionSeen(3, checker.Promotion{Timeline: 2, LSN: 1100}, at(150))
	if e := c.Elected(); e.Master == nil || e.Master.ID != 3 {
		t.Fatalf("setup: n3 promoted, master %+v", e.Master)
	}
	c.CheckFailed(3, errors.New("connection refused"), false, at(200))
	c.TakeReady()
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("setup: master %s", e.Master.Addr)
	}
	if x := c.Node(2); x.Role == RoleReplica && x.SyncState == "sync" {
		t.Fatalf("n2 streams timeline 2 from n3 (promoted, then out of sight): role %s, sync state %q (what n1 said on timeline 1); want no sync state",
			x.Role, x.SyncState)
	}
}
