package topology

import (
	"errors"
	"testing"
)

// n2 and n3 are two replicas cloned from one base backup whose postmasters
// started in the same microsecond: one identity (system identifier and
// start time), two names, two servers (TestOneIdentityTwoNamesIsTwoServers;
// seen in test clusters whose replicas start together). The master waits
// for both (FIRST 2). n2 goes down; n3, another server, stays up and its
// checks find it the same as before. What went down is n2's server, not
// n3's: n3 is still the master's sync standby on the rows the master read.
func TestSyncKeptByAReplicaWhoseTwinOfOneIdentityGoesDown(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	m := master(1, 1000, "n2", "n3")
	m.Replicas[0].SyncState, m.Replicas[1].SyncState = "sync", "sync"
	n2 := replica("n2", 1, 1, 1000)
	n3 := replica("n3", 1, 1, 1000)
	n3.StartTime = n2.StartTime // the same microsecond
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, n2, at(3), at(4), "10.0.0.2")
	c.CheckOK(3, n3, at(5), at(6), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(3); x.AliasOf != nil || x.Role != RoleSyncReplica {
		t.Fatalf("setup: node 3 alias of %v, role %s", x.AliasOf, x.Role)
	}
	c.CheckFailed(2, errors.New("connection refused"), false, at(100))
	c.CheckOK(3, n3, at(110), at(111), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(3); x.Role != RoleSyncReplica {
		t.Fatalf("n2 went down at 0.1s; n3, another server under the same identity, up throughout: role %s, sync unknown %q; want sync",
			x.Role, x.SyncUnknown)
	}
}
