package topology

import (
	"testing"
	"time"
)

// TestStaleEvidenceSurvivesANameFlip flips the stale master's name; here
// the name of the replica that holds the evidence flips. S, faded (it wrote
// past y), is stale only by y.ahead, kept on y's node. The name y is
// reached by (a DNS name or read VIP of the user's) reaches another
// replica Q for one check (a stale record, a VIP moved and moved back),
// then y again: y never restarted and still holds the acknowledged writes
// S never had. The evidence is kept for y's server while Q answers there
// (it went with the flip, and S was elected), and S stays stale.
func TestStaleEvidenceSurvivesTheReplicasNameFlip(t *testing.T) {
	for _, flip := range []bool{false, true} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
		sS, sY, sQ := t0.Add(-time.Hour), t0.Add(-3*time.Hour), t0.Add(-4*time.Hour)
		c.CheckOK(1, rcWritable("main", 2, 1000, sS), at(1), at(2), "10.0.0.1")
		y := noRecvReplica(1500, sY)
		c.CheckOK(2, y, at(3), at(4), "10.0.0.2")
		c.CheckOK(1, rcWritable("main", 2, 1000, sS), at(5), at(6), "10.0.0.1")
		c.CheckOK(1, rcWritable("main", 2, 2000, sS), at(100), at(101), "10.0.0.1")
		c.CheckOK(2, y, at(102), at(103), "10.0.0.2")
		c.CheckOK(1, rcWritable("main", 2, 2000, sS), at(104), at(105), "10.0.0.1")
		if !c.Node(1).Stale || c.Elected().Master != nil {
			t.Fatalf("flip %v: setup: S, faded, must stay stale by the evidence", flip)
		}
		if flip {
			// Q: a replica of S's branch, behind it.
			c.CheckOK(2, rcReplica("q", 2, 900, sQ, "10.0.0.1"), at(200), at(201), "10.0.0.8")
			c.CheckOK(1, rcWritable("main", 2, 2000, sS), at(202), at(203), "10.0.0.1")
		}
		for i := range 4 {
			ms := 600 + 500*i
			c.CheckOK(2, y, at(ms), at(ms+1), "10.0.0.2")
			c.CheckOK(1, rcWritable("main", 2, 2000, sS), at(ms+2), at(ms+3), "10.0.0.1")
		}
		e := c.Elected()
		t.Logf("flip %v: master %v, n1 %s", flip, e.Master != nil, c.Node(1).Role)
		if e.Master != nil {
			t.Errorf("flip %v: S, proven behind y on timeline 2, is elected master after y's name reached another replica for one check and came back to y (same server, same WAL)", flip)
		}
	}
}
