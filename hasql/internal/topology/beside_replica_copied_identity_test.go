package topology

import "testing"

// As TestServerBesideAReplicaBackInTheSetIsVouchedForNoMore, but the
// server beside n2 copies n2's identity too (system identifier and start
// time are plain SQL to read): once n2 is back in the set, the newcomer
// is taken for another address of n2's server. It is vouched for no
// more all the same: it does not stand for n2 when n2's checks time out,
// and its claim of a promotion takes no writes.
func TestServerBesideAReplicaCopyingItsIdentityIsVouchedForNoMore(t *testing.T) {
	n2 := streamingN2()
	c, m1, m, beside := besideWhileOut(n2)
	c.SetMembers(at(2000), []Member{m1, {ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true}, beside})
	for k := 0; k < 2; k++ {
		base := 3000 + 1000*k
		c.CheckOK(2, n2, at(base), at(base+1), "10.0.0.2")
		c.CheckOK(3, n2, at(base), at(base+1), "10.0.0.2")
		c.CheckOK(1, m, at(base+2), at(base+3), "10.0.0.1")
	}
	c.TakeReady()
	if x := c.Node(3); x.Vouched {
		t.Errorf("n2 back in the set: the newcomer copying its identity is %s, vouched", x.Role)
	}
	promoted := rcWritable("n2", 2, 200, n2.StartTime)
	for k := 0; k < 3; k++ {
		base := 6000 + 1000*k
		c.CheckOK(3, promoted, at(base), at(base+1), "10.0.0.2")
		c.CheckFailed(2, errTimeout{}, true, at(base))
		c.CheckOK(1, m, at(base+2), at(base+3), "10.0.0.1")
	}
	c.TakeReady()
	requireNewcomerTookNoWrites(t, c, 1, 3)
}
