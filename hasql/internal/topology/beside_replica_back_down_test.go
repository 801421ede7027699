package topology

import (
	"errors"
	"testing"
	"time"
)

// As TestServerBesideAReplicaBackInTheSetIsVouchedForNoMore, but n2 comes
// back into the set under its member name, n2, and its checks fail (a
// pg_hba rule, a partition between the Manager and n2 alone) while it
// streams on: the row n2 from its machine is as likely its as the
// newcomer's, which is vouched for no more, and its claim of a promotion
// takes no writes.
func TestServerBesideAReplicaBackInTheSetDownIsVouchedForNoMore(t *testing.T) {
	other := streamingN2()
	other.StartTime = t0.Add(40 * time.Second)
	c, m1, m, beside := besideWhileOut(other)
	c.SetMembers(at(2000), []Member{m1, {ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Name: "n2", Trusted: true}, beside})
	for k := 0; k < 2; k++ {
		base := 3000 + 1000*k
		c.CheckFailed(2, errors.New("connection refused"), false, at(base))
		c.CheckOK(3, other, at(base), at(base+1), "10.0.0.2")
		c.CheckOK(1, m, at(base+2), at(base+3), "10.0.0.1")
	}
	c.TakeReady()
	if x := c.Node(3); x.Vouched || x.Role.IsReplica() {
		t.Errorf("n2 back in the set, down: the newcomer beside it is %s (sync state %q), vouched %v; want detached", x.Role, x.SyncState, x.Vouched)
	}
	promoted := rcWritable("n2", 2, 200, other.StartTime)
	for k := 0; k < 3; k++ {
		base := 6000 + 1000*k
		c.CheckOK(3, promoted, at(base), at(base+1), "10.0.0.2")
		c.CheckFailed(2, errors.New("connection refused"), false, at(base))
		c.CheckOK(1, m, at(base+2), at(base+3), "10.0.0.1")
	}
	c.TakeReady()
	requireNewcomerTookNoWrites(t, c, 1, 3)
}
