package topology

import (
	"testing"
	"time"
)

// TestReplicasTimelineOutlivesItsNode: n3 is promoted (timeline 2) and
// its checks then time out; n2, a replica the user named, streams
// timeline 2 from it; n1, writable on timeline 1, is stale. The discoverer
// then drops n2 (a record gone for a while): n1 must stay stale, as while
// n2 was listed: nothing told the core that timeline 2 is gone. (It was
// elected, and its writes were lost with the branch.)
func TestReplicasTimelineOutlivesItsNode(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
	s1, s2, s3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
	ms := 0
	round := rounds(&ms)
	n1 := func() { c.CheckOK(1, rcWritable("n1", 1, 1000, s1), at(ms+1), at(ms+2), "10.0.0.1") }
	round(n1, func() {
		c.CheckOK(2, rcReplica("n2", 1, 1000, s2, "10.0.0.1"), at(ms+3), at(ms+4), "10.0.0.2")
	}, func() {
		c.CheckOK(3, rcReplica("n3", 1, 1000, s3, "10.0.0.1"), at(ms+5), at(ms+6), "10.0.0.3")
	})
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", c.Elected())
	}
	n3hung := func() { c.CheckFailed(3, errCheckTimeout, true, at(ms+6)) }
	round(n1, func() {
		c.CheckOK(2, rcReplica("n2", 2, 1100, s2, "10.0.0.3"), at(ms+3), at(ms+4), "10.0.0.2")
	}, n3hung)
	if m := c.Elected().Master; m != nil || !c.Node(1).Stale {
		t.Fatalf("setup: n1 must be stale behind timeline 2: %+v stale %v", c.Elected(), c.Node(1).Stale)
	}
	t.Logf("before: timeline %d, n1 stale %v", c.Timeline(), c.Node(1).Stale)
	c.SetMembers(at(ms), []Member{rcMember(1, "10.0.0.1", true), rcMember(3, "10.0.0.3", true)})
	round(n1, n3hung)
	if e := c.Elected(); e.Master != nil {
		t.Errorf("n2, a trusted replica that showed timeline 2, left the set: n1 (timeline 1) elected master; core timeline %d", c.Timeline())
	}
}
