package topology

import (
	"testing"
	"time"
)

// TestUnanchoredRogueTimelineDoesNotOutliveIt: no node is trusted and no
// system identifier pinned (every node believed, a warning says so). A
// rogue R answers writable with the cluster's system identifier on
// timeline 99 for a while, then leaves. While it stays, n1 (the real
// master, timeline 1) is stale; once it has left, n1 takes writes again:
// a rogue may not block them longer than it stays. (The elected master's
// timeline, kept when it leaves the set, kept R's.)
func TestUnanchoredRogueTimelineDoesNotOutliveIt(t *testing.T) {
	c := New(Config{})
	s1, s2, s9 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-9*time.Hour)
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", false), rcMember(2, "10.0.0.2", false)})
	ms := 0
	round := rounds(&ms)
	n1 := func() { c.CheckOK(1, rcWritable("n1", 1, 1000, s1), at(ms+1), at(ms+2), "10.0.0.1") }
	n2 := func() { c.CheckOK(2, rcReplica("n2", 1, 1000, s2, "10.0.0.1"), at(ms+3), at(ms+4), "10.0.0.2") }
	round(n1, n2)
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", c.Elected())
	}
	c.SetMembers(at(ms), []Member{rcMember(1, "10.0.0.1", false), rcMember(2, "10.0.0.2", false), rcMember(9, "10.0.0.9", false)})
	round(n1, n2, func() { c.CheckOK(9, rcWritable("r", 99, 5000, s9), at(ms+5), at(ms+6), "10.0.0.9") })
	t.Logf("rogue present: %+v", c.Elected())
	c.SetMembers(at(ms), []Member{rcMember(1, "10.0.0.1", false), rcMember(2, "10.0.0.2", false)})
	round(n1, n2)
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Errorf("rogue left; n1 not master: %+v stale %v", c.Elected(), c.Node(1).Stale)
	}
}

// TestUnvouchedWritableLeavesNoTimeline: anchored by trusted n1; an
// untrusted writable node on timeline 99 is never elected and, gone,
// leaves nothing behind.
func TestUnvouchedWritableLeavesNoTimeline(t *testing.T) {
	c := New(Config{})
	s1, s2, s9 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-9*time.Hour)
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
	ms := 0
	round := rounds(&ms)
	n1 := func() { c.CheckOK(1, rcWritable("n1", 1, 1000, s1), at(ms+1), at(ms+2), "10.0.0.1") }
	n2 := func() { c.CheckOK(2, rcReplica("n2", 1, 1000, s2, "10.0.0.1"), at(ms+3), at(ms+4), "10.0.0.2") }
	round(n1, n2)
	c.SetMembers(at(ms), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(9, "10.0.0.9", false)})
	round(n1, n2, func() { c.CheckOK(9, rcWritable("r", 99, 5000, s9), at(ms+5), at(ms+6), "10.0.0.9") })
	if m := c.Elected().Master; m == nil || m.ID != 1 || c.Timeline() != 1 {
		t.Errorf("rogue present: %+v timeline %d", c.Elected(), c.Timeline())
	}
	c.SetMembers(at(ms), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
	round(n1, n2)
	if m := c.Elected().Master; m == nil || m.ID != 1 || c.Timeline() != 1 {
		t.Errorf("rogue left: %+v timeline %d", c.Elected(), c.Timeline())
	}
}
