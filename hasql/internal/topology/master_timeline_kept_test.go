package topology

import (
	"testing"
	"time"
)

// TestElectedMastersTimelineOutlivesItsNode: n2 is promoted while n1 runs
// on (a split of the cluster), and the core elects n2 on timeline 2, n1
// stale. Then the discoverer drops n2 (its DNS record or Patroni member
// gone for a while): n1, writable on the timeline n2's promotion left,
// must stay stale: the writes n2 took are not on n1, and a write there
// would be lost when it rejoins timeline 2. ForgetTimeline is the
// operator's way back to n1.
func TestElectedMastersTimelineOutlivesItsNode(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
	s1, s2, s3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
	ms := 0
	round := rounds(&ms)
	n1 := func() {
		c.CheckOK(1, rcWritable("n1", 1, 1000, s1), at(ms+1), at(ms+2), "10.0.0.1")
	}
	n3 := func() {
		c.CheckOK(3, rcReplica("n3", 1, 1000, s3, "10.0.0.1"), at(ms+5), at(ms+6), "10.0.0.3")
	}
	round(n1, func() {
		c.CheckOK(2, rcReplica("n2", 1, 1000, s2, "10.0.0.1"), at(ms+3), at(ms+4), "10.0.0.2")
	}, n3)
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", c.Elected())
	}
	round(n1, func() {
		c.CheckOK(2, rcWritable("n2", 2, 1100, s2), at(ms+3), at(ms+4), "10.0.0.2")
	}, n3)
	if m := c.Elected().Master; m == nil || m.ID != 2 || !c.Node(1).Stale {
		t.Fatalf("setup: n2 must be master on timeline 2, n1 stale: %+v, n1 stale %v", c.Elected(), c.Node(1).Stale)
	}

	c.SetMembers(at(ms), []Member{rcMember(1, "10.0.0.1", true), rcMember(3, "10.0.0.3", true)})
	round(n1, n3)
	if e := c.Elected(); e.Master != nil || !c.Node(1).Stale || e.Timeline != 2 {
		t.Errorf("n2, elected on timeline 2, left the set: master %v, n1 stale %v, election's timeline %d; want no master, n1 stale behind timeline 2",
			e.Master != nil, c.Node(1).Stale, e.Timeline)
	}

	c.ForgetTimeline(at(ms))
	round(n1, n3)
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Errorf("after ForgetTimeline n1 is not master: %+v", c.Elected())
	}
}

// rounds returns a function that runs the checks given three times, in
// order, moving *ms on by 10 ms a round (the checks read it for their
// times).
func rounds(ms *int) func(checks ...func()) {
	return func(checks ...func()) {
		for range 3 {
			for _, check := range checks {
				check()
			}
			*ms += 10
		}
	}
}
