package topology

import (
	"testing"
	"time"
)

// r1 is the master's sync standby, trusted, answering at its own address
// as the same server at every check, and the master reads its walsenders
// at every check. A server nothing vouches for (a discoverer's node, see
// attack_test.go) answers first as an exact copy of r1's identity, then as
// a "restart" of it (same system identifier and name, a new start time),
// at every check, each time just after the master's check began. Its word
// that r1's server restarted is unconfirmed: r1's own address shows the
// same server. r1 must stay sync, not be held RoleReplica (out of SyncOnly)
// round after round by a server that proves nothing.
func TestSyncReplicaKeptWhenAnUnvouchedCopyOfItsIdentityRestarts(t *testing.T) {
	c := atkCluster(t, false)
	notSync := 0
	ms := 100
	for i := range 5 {
		c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(ms), atkAt(ms+1), "10.0.0.1")
		c.CheckOK(atkX, atkReplica("r1", atkR1Start), atkAt(ms+2), atkAt(ms+3), "10.0.0.9")
		c.CheckOK(atkR1, atkReplica("r1", atkR1Start), atkAt(ms+4), atkAt(ms+5), "10.0.0.2")
		restarted := atkReplica("r1", atkR1Start.Add(time.Duration(i+1)*time.Second))
		c.CheckOK(atkX, restarted, atkAt(ms+6), atkAt(ms+7), "10.0.0.9")
		c.CheckOK(atkR1, atkReplica("r1", atkR1Start), atkAt(ms+8), atkAt(ms+9), "10.0.0.2")
		c.TakeReady()
		if r := c.Node(atkR1).Role; r != RoleSyncReplica {
			notSync++
		}
		ms += 100
	}
	x, r1 := c.Node(atkX), c.Node(atkR1)
	if x.Vouched {
		t.Fatal("setup: the copy is vouched for")
	}
	if notSync > 0 {
		t.Fatalf("r1 answered as the same server at its own address throughout; a server nothing vouches for copied and \"restarted\" its identity: r1 not sync after %d of 5 rounds (last: role %s, sync unknown %q); want sync",
			notSync, r1.Role, r1.SyncUnknown)
	}
}
