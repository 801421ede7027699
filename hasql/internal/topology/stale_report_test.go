package topology

import (
	"slices"
	"testing"
	"time"
)

// TestStaleBeforeTheClusterIsLearnedSaysItsTimeline: before the cluster's
// system identifier is learned (a trusted node's first check not in yet),
// a writable node on timeline 1 is stale for a vouched replica of its
// system identifier on timeline 2. The election's Timeline, which the
// stale master's error quotes as the cluster's, says 2: it said 0 ("an
// older timeline than the cluster's 0").
func TestStaleBeforeTheClusterIsLearnedSaysItsTimeline(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
	c.CheckOK(1, rcWritable("old", 1, 1000, t0.Add(-time.Hour)), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, rcReplica("y", 2, 900, t0.Add(-2*time.Hour), "10.0.0.9"), at(3), at(4), "10.0.0.2")
	c.CheckOK(1, rcWritable("old", 1, 1000, t0.Add(-time.Hour)), at(5), at(6), "10.0.0.1")
	e := c.Elected()
	if e.Master != nil || !slices.Equal(e.Stale, []string{"10.0.0.1:5432 (timeline 1)"}) || !slices.Equal(e.StaleBehind, []string{""}) {
		t.Fatalf("master %v, stale %q behind %q: want 10.0.0.1 stale on timeline 1, behind no replica", e.Master != nil, e.Stale, e.StaleBehind)
	}
	if e.Timeline != 2 {
		t.Errorf("the election's Timeline is %d with 10.0.0.1 stale on timeline 1 for a replica on timeline 2", e.Timeline)
	}
}

// TestTwoStaleMastersBehindTwoReplicas: two servers promoted apart on
// timeline 2 (r1 at 1000, r2 at 2000), each behind a replica of the true
// branch (y1 at 1500, y2 at 2500): the election names, for each, its own
// replica (the error's message must not join them into one advice: see
// hasql's TestStaleMasterErrorSaysWhy).
func TestTwoStaleMastersBehindTwoReplicas(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true),
		rcMember(3, "10.0.0.3", true), rcMember(4, "10.0.0.4", true)})
	sR1, sR2, sY1, sY2 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour), t0.Add(-4*time.Hour)
	y1 := noRecvReplica(1500, sY1)
	y2 := noRecvReplica(2500, sY2)
	y2.Name = "y2"
	for i := range 3 {
		ms := 10 * i
		c.CheckOK(1, rcWritable("r1", 2, 1000, sR1), at(ms+1), at(ms+2), "10.0.0.1")
		c.CheckOK(3, rcWritable("r2", 2, 2000, sR2), at(ms+3), at(ms+4), "10.0.0.3")
		c.CheckOK(2, y1, at(ms+5), at(ms+6), "10.0.0.2")
		c.CheckOK(4, y2, at(ms+7), at(ms+8), "10.0.0.4")
	}
	e := c.Elected()
	if e.Master != nil || len(e.SplitBrain) > 0 {
		t.Fatalf("master %v, split brain %q: two servers behind replicas of another branch elected", e.Master != nil, e.SplitBrain)
	}
	if !slices.Equal(e.StaleBehind, []string{"10.0.0.2:5432", "10.0.0.4:5432"}) {
		t.Errorf("stale %q behind %q: want 10.0.0.1 behind 10.0.0.2 and 10.0.0.3 behind 10.0.0.4", e.Stale, e.StaleBehind)
	}
}

// TestAnAliasOfAStaleMasterSaysWhy: a second address of a stale master
// (a VIP beside the host's own name) takes its role for reporting, and
// with it why it is stale: it showed role "stale" with StaleMaster false
// and no replica named.
func TestAnAliasOfAStaleMasterSaysWhy(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
	sR := t0.Add(-time.Hour)
	c.CheckOK(3, rcWritable("r", 2, 1000, sR), at(0), at(1), "10.0.0.1") // the VIP reaches R
	proveRBehind(t, c, sR, noRecvReplica(1500, t0.Add(-3*time.Hour)))
	c.CheckOK(3, rcWritable("r", 2, 1000, sR), at(7), at(8), "10.0.0.1")
	r, vip := c.Node(1), c.Node(3)
	if vip.AliasOf != r {
		t.Fatalf("setup: node 3 must be an alias of node 1: %v", vip.AliasOf)
	}
	if vip.Role != RoleStaleMaster || !vip.Stale || vip.StaleBehind != r.StaleBehind || r.StaleBehind != "10.0.0.2:5432" {
		t.Errorf("alias of R: role %s, stale %v behind %q; R behind %q", vip.Role, vip.Stale, vip.StaleBehind, r.StaleBehind)
	}
	if e := c.Elected(); len(e.Stale) != 1 || e.Master != nil {
		t.Errorf("one server at two addresses: stale %q, master %v", e.Stale, e.Master != nil)
	}
}
