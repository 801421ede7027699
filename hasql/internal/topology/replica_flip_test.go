package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
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

// provedBehindByDiscovered: M (n2) master on timeline 2, discovered y
// (n3, 10.0.0.3, not named by the user) vouched for by M's listing; M dies
// with y holding its WAL to 1500; R, promoted apart on timeline 2 at 1000,
// answers at n1 and is stale behind y. With lapse, another server (q)
// answered at y's address for one check and y came back: its proof given
// back, its vouching not (only a master's listing earns it again). It
// returns R's and y's start times.
func provedBehindByDiscovered(t *testing.T, lapse bool) (c *Core, sR, sY time.Time) {
	t.Helper()
	c = New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", false)})
	sM, sQ := t0.Add(-time.Hour), t0.Add(-4*time.Hour)
	sR, sY = t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
	rowY := checker.Replica{ApplicationName: "y", ClientAddr: "10.0.0.3", State: "streaming", SyncState: "async", ReplayLSN: 1000}
	c.CheckFailed(1, errRefused, false, at(1))
	c.CheckOK(2, rcWritable("m", 2, 1000, sM, rowY), at(2), at(3), "10.0.0.2")
	c.CheckOK(3, rcReplica("y", 2, 1000, sY, "10.0.0.2"), at(4), at(5), "10.0.0.3")
	c.CheckOK(2, rcWritable("m", 2, 1000, sM, rowY), at(6), at(7), "10.0.0.2")
	if e := c.Elected(); e.Master == nil || e.Master.ID != 2 || !c.Node(3).Vouched {
		t.Fatalf("lapse %v: setup: master %v, y vouched %v", lapse, e.Master != nil, c.Node(3).Vouched)
	}
	c.CheckFailed(2, errRefused, false, at(100))
	yAlone := yWithoutUpstream(sY)
	c.CheckOK(3, yAlone, at(101), at(102), "10.0.0.3")
	c.CheckOK(1, rcWritable("r", 2, 1000, sR), at(103), at(104), "10.0.0.1")
	c.CheckOK(3, yAlone, at(105), at(106), "10.0.0.3")
	c.CheckOK(1, rcWritable("r", 2, 1000, sR), at(107), at(108), "10.0.0.1")
	if x := c.Node(1); !x.Stale || x.StaleBehind != "10.0.0.3:5432" {
		t.Fatalf("lapse %v: setup: R is %s (behind %q), want stale behind y", lapse, x.Role, x.StaleBehind)
	}
	if lapse {
		c.CheckOK(3, rcReplica("q", 2, 900, sQ, ""), at(200), at(201), "10.0.0.3")
		c.CheckOK(3, yAlone, at(202), at(203), "10.0.0.3")
		if x := c.Node(3); x.Vouched || len(x.ahead) == 0 {
			t.Fatalf("lapse %v: setup: y vouched %v, proofs %v: want its proof back, its vouching not", lapse, x.Vouched, x.ahead)
		}
	}
	return c, sR, sY
}

// yWithoutUpstream is y holding M's WAL up to 1500, its upstream gone.
func yWithoutUpstream(sY time.Time) checker.Result {
	r := rcReplica("y", 2, 1500, sY, "")
	r.ReceiveTimeline, r.UpstreamPort = 0, 0
	return r
}

// Then n1's name moves onto T, the master y follows now, whose walsenders
// list y: the proof ends there, also for a y whose vouching lapsed. It
// stayed, and with it no master for good: the one writable node was stale
// by y's proof, and only a master could vouch for y again.
func TestProofOfALapsedReplicaEndsWhenItFollows(t *testing.T) {
	for _, lapse := range []bool{false, true} {
		c, _, sY := provedBehindByDiscovered(t, lapse)
		sT := t0.Add(-5 * time.Hour)
		rowY := checker.Replica{ApplicationName: "y", ClientAddr: "10.0.0.3", State: "streaming", SyncState: "async", ReplayLSN: 2000}
		for i := range 3 {
			ms := 300 + 100*i
			c.CheckOK(3, rcReplica("y", 2, 2000, sY, "10.0.0.1"), at(ms), at(ms+1), "10.0.0.3")
			c.CheckOK(1, rcWritable("t", 2, 2000, sT, rowY), at(ms+2), at(ms+3), "10.0.0.1")
		}
		e := c.Elected()
		t.Logf("lapse %v: master %v; n1 %s behind %q; y %s vouched %v", lapse, e.Master != nil, c.Node(1).Role, c.Node(1).StaleBehind, c.Node(3).Role, c.Node(3).Vouched)
		if e.Master == nil || e.Master.ID != 1 {
			t.Errorf("lapse %v: T, whose walsenders list y streaming from it, not ahead of it, is %s (behind %q): no master", lapse, c.Node(1).Role, c.Node(1).StaleBehind)
		}
	}
}

// Instead, R itself, the very server y proved behind, writes on past y's
// position, and y's walreceiver is pointed at R's address (y's upstream
// name moved onto R, or a server at y's address copying y's identity
// streams from R under y's name). On one timeline number PostgreSQL
// streams from the position y asks for, and R's walsenders list y from
// its address: R still lacks M's WAL from 1000 to 1500, and must stay
// stale, also once y is on its own again.
func TestProofHeldWhenTheReplicaStreamsFromTheServerItProvedBehind(t *testing.T) {
	for _, lapse := range []bool{false, true} {
		c, sR, sY := provedBehindByDiscovered(t, lapse)
		rowY := checker.Replica{ApplicationName: "y", ClientAddr: "10.0.0.3", State: "streaming", SyncState: "async", ReplayLSN: 1500}
		for i := range 3 {
			ms := 300 + 100*i
			c.CheckOK(3, rcReplica("y", 2, 1500, sY, "10.0.0.1"), at(ms), at(ms+1), "10.0.0.3")
			c.CheckOK(1, rcWritable("r", 2, 3000, sR, rowY), at(ms+2), at(ms+3), "10.0.0.1")
		}
		if e := c.Elected(); e.Master != nil {
			t.Errorf("lapse %v: R, the server y proved behind, elected once y streamed from it: M's writes from 1000 to 1500 lost", lapse)
		}
		c.CheckOK(3, yWithoutUpstream(sY), at(700), at(701), "10.0.0.3")
		c.CheckOK(1, rcWritable("r", 2, 3100, sR), at(702), at(703), "10.0.0.1")
		if e := c.Elected(); e.Master != nil || c.Node(1).StaleBehind != "10.0.0.3:5432" {
			t.Errorf("lapse %v: y on its own again: R is %s (behind %q)", lapse, c.Node(1).Role, c.Node(1).StaleBehind)
		}
	}
}
