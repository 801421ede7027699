package topology

import (
	"errors"
	"testing"
)

// While a trusted node has not been checked yet (its first check is still
// under way: a hung node takes the check timeout), the cluster's system
// identifier is not learned unless a replica confirms a writable node, and
// Timeline counts no node's timeline (only nodes of c.cluster). A writable
// node the user named was elected meanwhile whatever the other nodes
// showed: here n2, a replica streaming timeline 2 (from a master out of
// the Manager's sight), proves n1 is a stale master on timeline 1, yet n1
// took writes until n3's first check ended.
func TestTimelinesCountBeforeTheClusterIsKnown(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	c.CheckOK(1, master(1, 9000), at(1), at(2), "10.0.0.1")
	r := replica("n2", 2, 2, 8000)                    // behind n1: no "ahead" proof, only the timeline
	r.UpstreamHost, r.UpstreamPort = "10.0.0.3", 5432 // n3, promoted; this Manager's first check of it hangs
	c.CheckOK(2, r, at(1), at(3), "10.0.0.2")
	c.CheckOK(1, master(1, 9100), at(4), at(5), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s (timeline 1) elected while n2, vouched (named by the user), streams timeline 2 and n3's first check is under way: cluster %d, core timeline %d",
			e.Master.Addr, c.Cluster(), c.Timeline())
	}
	// Control: once n3's first check times out, n1 is stale.
	c.CheckFailed(3, errors.New("check timed out"), true, at(2000))
	if e := c.Elected(); e.Master != nil || len(e.Stale) == 0 {
		t.Fatalf("after n3's first check: %+v", e)
	}
}
