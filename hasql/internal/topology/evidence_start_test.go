package topology

// A replica's proof that a writable server R is behind holds at R's node
// against any server that answers there, also one that started before R
// did: a start time tells a restart of R from another server only where
// R's clock never steps back, and an earlier-started server at R's name
// may as well be another server on a superseded branch. The cost, without
// pg_monitor, is a true master moved onto R's name kept stale (see
// docs/roles.md); each test below elects a server on a superseded branch
// if the proof lets such a server go.

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// proveRBehind sets up the scenario: n1 (a name) reaches R,
// promoted apart on timeline 2 at 1000; y (n2) holds the true master's
// timeline-2 WAL up to 1500 and, its upstream gone or the check user
// without pg_monitor, shows no walreceiver. R is proven behind y.
func proveRBehind(t *testing.T, c *Core, sR time.Time, y checker.Result) {
	t.Helper()
	c.CheckOK(1, rcWritable("r", 2, 1000, sR), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, y, at(3), at(4), "10.0.0.2")
	c.CheckOK(1, rcWritable("r", 2, 1000, sR), at(5), at(6), "10.0.0.1")
	if x := c.Node(1); !x.Stale || c.Elected().Master != nil {
		t.Fatalf("setup: R must be stale behind y: stale %v, master %v", x.Stale, c.Elected().Master)
	}
}

// A second server S promoted apart (timeline 2 too: promoted from timeline
// 1 like R), which started before R did and has written past y's
// position on its own branch, takes the name n1 (a VIP or DNS name moved
// off R by a failover tool that knows no better). S lacks the WAL y holds
// (acknowledged by the true master): it is on a superseded branch. Nothing
// lists y at S (y does not stream from it), and nothing but the proof at
// n1 holds it (it is past y). Both with a check user without pg_monitor and with one (y's
// upstream is dead, so it shows no walreceiver either way; S's walsenders
// list its own replica, not y).
func TestStaleProofHoldsAgainstAnEarlierStartedServer(t *testing.T) {
	for _, privileged := range []bool{false, true} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
		sR, sS, sY := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
		y := noRecvReplica(1500, sY)
		proveRBehind(t, c, sR, y)
		row := checker.Replica{ApplicationName: "s1"} // S's own replica, not y
		if privileged {
			row = checker.Replica{ApplicationName: "s1", ClientAddr: "10.0.0.66", State: "streaming", SyncState: "async", ReplayLSN: 2000}
		}
		for i := range 5 {
			ms := 500 + 500*i
			c.CheckOK(1, rcWritable("s", 2, checker.LSN(2000+100*i), sS, row), at(ms), at(ms+1), "10.0.0.1")
			c.CheckOK(2, y, at(ms+2), at(ms+3), "10.0.0.2")
		}
		e, x := c.Elected(), c.Node(1)
		t.Logf("privileged %v: master %v, n1 %s stale %v, stale list %v", privileged, e.Master != nil, x.Role, x.Stale, e.Stale)
		if e.Master != nil {
			t.Errorf("privileged %v: S, promoted apart on timeline 2 and missing y's WAL (acknowledged), is elected master through the name moved off R", privileged)
		}
	}
}

// R itself, restarted where its clock reads earlier than at its last start:
// the same data directory brought up on another host (shared storage,
// DRBD, a Kubernetes volume rescheduled) whose clock lags, or its own host's
// clock stepped back (NTP correcting a clock that ran ahead when R
// started). It has written past y since (its restart checkpoint, other
// writes), so only the recorded proof holds it.
func TestStaleProofHoldsAcrossARestartOnAnEarlierClock(t *testing.T) {
	// R started two minutes before the proof (restarted, then promoted
	// apart); its next start comes a moment later by true time, on a
	// clock reading 0 or 5 minutes behind.
	for _, skew := range []time.Duration{0, 5 * time.Minute} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
		sR, sY := t0.Add(-2*time.Minute), t0.Add(-3*time.Hour)
		y := noRecvReplica(1500, sY)
		proveRBehind(t, c, sR, y)
		c.CheckFailed(1, errRefused, false, at(100))
		// R restarts at 0.2 s past t0 by true time; its clock reads skew
		// earlier.
		restart := at(200).Add(-skew)
		for i := range 5 {
			ms := 500 + 500*i
			c.CheckOK(1, rcWritable("r", 2, checker.LSN(2000+100*i), restart), at(ms), at(ms+1), "10.0.0.1")
			c.CheckOK(2, y, at(ms+2), at(ms+3), "10.0.0.2")
		}
		e, x := c.Elected(), c.Node(1)
		t.Logf("skew %v: master %v, n1 %s stale %v", skew, e.Master != nil, x.Role, x.Stale)
		if e.Master != nil {
			t.Errorf("skew %v: R, proven behind y on timeline 2, restarted with a start time its clock reads earlier, is elected master", skew)
		}
	}
}

// An untrusted address (discovered, not named by the connection string)
// where R was proven behind: R was vouched by its replica z (trusted),
// which streams from it. Later another server X answers at that address
// (a rogue, or another server promoted apart, e.g. after an IP moved),
// with the cluster's system identifier and an earlier start time (both
// plain SQL to read from any server, and a rogue can claim any), past y's
// position. z is re-cloned from X (pg_basebackup: a new server, started
// later) and streams from it; X lists z. The proof at n3 holds X stale.
func TestStaleProofHoldsAtAnUntrustedAddressTakenOver(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", false), rcMember(4, "10.0.0.4", true)})
	sR, sX, sY, sZ := t0.Add(-time.Hour), t0.Add(-5*time.Hour), t0.Add(-3*time.Hour), t0.Add(-4*time.Hour)
	y := noRecvReplica(1500, sY)
	zrow := checker.Replica{ApplicationName: "z", ClientAddr: "10.0.0.4", State: "streaming", SyncState: "async"}
	z := func(lsn checker.LSN) checker.Result { return rcReplica("z", 2, lsn, sZ, "10.0.0.3") }
	c.CheckOK(3, rcWritable("r", 2, 1000, sR, zrow), at(1), at(2), "10.0.0.3")
	c.CheckOK(4, z(1000), at(3), at(4), "10.0.0.4")
	c.CheckOK(2, y, at(5), at(6), "10.0.0.2")
	c.CheckOK(3, rcWritable("r", 2, 1000, sR, zrow), at(7), at(8), "10.0.0.3")
	if x := c.Node(3); !x.Vouched || !x.Stale || c.Elected().Master != nil {
		t.Fatalf("setup: R at n3 must be vouched and stale: vouched %v stale %v master %v", x.Vouched, x.Stale, c.Elected().Master)
	}
	for i := range 5 {
		ms := 500 + 500*i
		lsn := checker.LSN(3000 + 100*i)
		c.CheckOK(3, rcWritable("x", 2, lsn, sX, zrow), at(ms), at(ms+1), "10.0.0.3")
		c.CheckOK(4, rcReplica("z", 2, lsn, at(400), "10.0.0.3"), at(ms+2), at(ms+3), "10.0.0.4")
		c.CheckOK(2, y, at(ms+4), at(ms+5), "10.0.0.2")
	}
	e, x := c.Elected(), c.Node(3)
	t.Logf("master %v, n3 %s vouched %v stale %v", e.Master != nil, x.Role, x.Vouched, x.Stale)
	if e.Master != nil {
		t.Errorf("X at n3, where R was proven behind y, with an earlier start time, is elected master (y's WAL is not on it)")
	}
}

// The election says why each stale node is stale: the replica that holds
// WAL of its timeline it never wrote, or nothing for an older timeline.
func TestElectionSaysWhyStale(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
	proveRBehind(t, c, t0.Add(-time.Hour), noRecvReplica(1500, t0.Add(-3*time.Hour)))
	if e := c.Elected(); len(e.Stale) != 1 || len(e.StaleBehind) != 1 || e.StaleBehind[0] != "10.0.0.2:5432" {
		t.Errorf("behind a replica: stale %q, behind %q; want the replica 10.0.0.2:5432", e.Stale, e.StaleBehind)
	}
	if x := c.Node(1); x.StaleBehind != "10.0.0.2:5432" {
		t.Errorf("behind a replica: the node's StaleBehind is %q", x.StaleBehind)
	}

	c = New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
	c.CheckOK(1, rcWritable("old", 1, 1000, t0.Add(-time.Hour)), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, rcReplica("y", 2, 900, t0.Add(-2*time.Hour), "10.0.0.9"), at(3), at(4), "10.0.0.2")
	c.CheckOK(1, rcWritable("old", 1, 1000, t0.Add(-time.Hour)), at(5), at(6), "10.0.0.1")
	if e := c.Elected(); len(e.Stale) != 1 || len(e.StaleBehind) != 1 || e.StaleBehind[0] != "" {
		t.Errorf("older timeline: stale %q, behind %q; want one stale node with no replica named", e.Stale, e.StaleBehind)
	}
	if x := c.Node(1); !x.Stale || x.StaleBehind != "" {
		t.Errorf("older timeline: the node's Stale %v, StaleBehind %q", x.Stale, x.StaleBehind)
	}
}
