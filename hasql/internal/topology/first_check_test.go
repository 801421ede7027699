package topology

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// T, master on timeline 2, died (n1 refuses); Q (n2), its sync standby,
// replayed T's acknowledged writes up to 0/5DC and, its upstream dead,
// shows no walreceiver. S (n3), a replica left behind, was promoted apart
// to timeline 2 (the same number) at 0/3E8. A Manager starts now and
// checks the three: S must not take writes. Elected at its first check
// (a replica's position read before a server was first seen counted for
// nothing, and one read while its check ran could be S's own WAL), S
// wrote past 0/5DC within a check interval, and Q was never found ahead
// of it again: T's writes were lost for good. The checks run one after
// the other, in either order, or at once (a Manager starts every first
// check together).
func TestSupersededServerNotElectedAtItsFirstCheck(t *testing.T) {
	for _, order := range []string{"Q checked before S", "checks overlap", "S checked before Q"} {
		c := New(Config{})
		c.SetMembers(at(0), members(3))
		refused := errors.New("connection refused")
		q := replica("n2", 2, 0, 1500)
		s := master(2, 1000)
		s.Name, s.StartTime = "n3", t0.Add(-time.Hour)
		c.CheckFailed(1, refused, false, at(1))
		switch order {
		case "Q checked before S":
			c.CheckOK(2, q, at(2), at(4), "10.0.0.2")
			c.CheckOK(3, s, at(5), at(7), "10.0.0.3")
		case "checks overlap":
			c.CheckOK(2, q, at(2), at(6), "10.0.0.2")
			c.CheckOK(3, s, at(3), at(7), "10.0.0.3")
		default:
			c.CheckOK(3, s, at(2), at(3), "10.0.0.3")
			if m := c.Elected().Master; m != nil {
				t.Fatalf("%s: S elected before Q, a node the user named, answered a check", order)
			}
			if x := c.Node(3); x.Role != RoleUnknown || !strings.Contains(x.Waiting, "every node of the connection string") {
				t.Errorf("%s: S waiting for Q's first check is %s, waiting %q", order, x.Role, x.Waiting)
			}
			c.CheckOK(2, q, at(4), at(6), "10.0.0.2")
		}
		for round := range 5 {
			if m := c.Elected().Master; m != nil {
				t.Fatalf("%s, round %d: %s elected (timeline 2 at %s) while replica Q replayed timeline-2 WAL up to %s it never wrote",
					order, round, m.Addr, checker.LSN(s.LSN), checker.LSN(1500))
				s.LSN += 1000 // a check interval of writes
			}
			ms := 1000 + 1000*round
			c.CheckFailed(1, refused, false, at(ms))
			c.CheckOK(2, q, at(ms+1), at(ms+2), "10.0.0.2")
			c.CheckOK(3, s, at(ms+3), at(ms+4), "10.0.0.3")
		}
		if x := c.Node(3); x.Role != RoleStaleMaster || x.StaleBehind != "10.0.0.2:5432" {
			t.Errorf("%s: S is %s (stale behind %q), want a stale master behind Q", order, x.Role, x.StaleBehind)
		}
	}
}

// The same as TestSupersededServerNotElectedAtItsFirstCheck with S seen
// first as a replica (of T, the master that died), then promoted apart:
// its first writable check overlaps Q's. The wait counted from S's first
// answer, as a replica, so S's first writable check was taken for a later
// one, and S was elected, T's writes past 0/3E8 lost.
func TestReplicaPromotedApartWaitsAtItsFirstWritableCheck(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	refused := errors.New("connection refused")
	q := replica("n2", 2, 0, 1500)
	s := master(2, 1000)
	s.Name, s.StartTime = "n3", t0.Add(-time.Hour)
	asReplica := replica("n3", 2, 2, 1000)
	asReplica.StartTime = s.StartTime
	asReplica.UpstreamHost, asReplica.UpstreamPort = "10.0.0.1", 5432
	c.CheckFailed(1, refused, false, at(1))
	c.CheckOK(3, asReplica, at(1), at(2), "10.0.0.3")
	c.CheckOK(2, q, at(3), at(6), "10.0.0.2")
	c.CheckOK(3, s, at(4), at(7), "10.0.0.3")
	for round := range 5 {
		if m := c.Elected().Master; m != nil {
			t.Fatalf("round %d: %s elected (timeline 2 at %s) while replica Q replayed timeline-2 WAL up to %s it never wrote",
				round, m.Addr, checker.LSN(s.LSN), checker.LSN(1500))
		}
		ms := 1000 + 1000*round
		c.CheckFailed(1, refused, false, at(ms))
		c.CheckOK(2, q, at(ms+1), at(ms+2), "10.0.0.2")
		c.CheckOK(3, s, at(ms+3), at(ms+4), "10.0.0.3")
	}
	if x := c.Node(3); x.Role != RoleStaleMaster || x.StaleBehind != "10.0.0.2:5432" {
		t.Errorf("S is %s (stale behind %q), want a stale master behind Q", x.Role, x.StaleBehind)
	}
}

// A replica following S, the master, through another replica (not listed
// by S's walsenders) may show S's WAL written after S's position was read:
// at S's first check that keeps S from writes for one check, no more. The
// same when S's address answered once before with S's identity in recovery
// (a rogue's copy of it, before the name reached S; or S a replica then,
// for all the core can tell): the wait counts from the first check that
// found S writable there, not from the first answer with its identity
// (from there, S was elected at once).
func TestFirstCheckOverlapWaitsOneCheck(t *testing.T) {
	for _, answeredBefore := range []bool{false, true} {
		c := New(Config{})
		c.SetMembers(at(0), members(3))
		s := master(2, 1000, "n2")
		r := replica("n2", 2, 2, 1000)
		r.UpstreamHost, r.UpstreamPort = "10.0.0.1", 5432
		y := replica("n3", 2, 2, 1200) // cascades from n2
		y.UpstreamHost, y.UpstreamPort = "10.0.0.2", 5432
		if answeredBefore {
			before := s
			before.InRecovery, before.ReadOnly, before.Replicas = true, true, nil
			c.CheckOK(1, before, at(0), at(1), "10.0.0.1")
		}
		c.CheckOK(2, r, at(1), at(3), "10.0.0.2")
		c.CheckOK(3, y, at(2), at(6), "10.0.0.3")
		c.CheckOK(1, s, at(2), at(7), "10.0.0.1")
		if m := c.Elected().Master; m != nil {
			t.Fatalf("answered before %v: S elected at its first writable check while n3 showed WAL past S's position at a check that ran with it", answeredBefore)
		}
		if x := c.Node(1); x.Role != RoleUnknown || !strings.Contains(x.Waiting, "replica 10.0.0.3:5432 showed WAL past") {
			t.Errorf("answered before %v: S, kept from election for a check, is %s, waiting %q", answeredBefore, x.Role, x.Waiting)
		}
		s.LSN = 1300
		c.CheckOK(1, s, at(100), at(101), "10.0.0.1")
		if m := c.Elected().Master; m == nil || m.ID != 1 {
			t.Fatalf("answered before %v: S not elected at its second check, n3's position read before it: %v", answeredBefore, c.Node(1).Role)
		}
		if w := c.Node(1).Waiting; w != "" {
			t.Errorf("answered before %v: the elected master still says it waits: %q", answeredBefore, w)
		}
	}
}

// The master crashes after its sync standby received the start of a
// record it had not finished (sent as flushed: the rest was never
// written); it restarts, its crash recovery ends before that record and
// it writes over it. Its standby's receive position, read before the
// crash, is past the restarted server's position, but what the standby
// replayed is not: the restarted master is master, not stale.
func TestRestartedMasterBehindATornRecordIsMaster(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	m := master(1, 1100, "n2")
	m.Replicas[0].SyncState = "sync"
	y := replica("n2", 1, 1, 1000)
	y.ReceiveLSN = 1100 // received; replayed 0/3E8
	y.UpstreamHost, y.UpstreamPort = "10.0.0.1", 5432
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, y, at(3), at(4), "10.0.0.2")
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("setup: master %v", e.Master)
	}
	c.CheckFailed(1, errors.New("connection refused"), false, at(100))
	restarted := master(1, 1050, "n2") // the torn record's start, written over
	restarted.StartTime = t0.Add(time.Hour)
	c.CheckOK(1, restarted, at(200), at(201), "10.0.0.1")
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("the restarted master is %s (stale behind %q): the standby's received tail, a record torn by the crash, taken for WAL it never wrote",
			c.Node(1).Role, c.Node(1).StaleBehind)
	}
}

// A Manager starts on a healthy cluster under writes: S (n1) master, r (n2)
// a replica S lists, y (n3) a replica cascading from r. The three first
// checks run together. S's and r's end first: S, confirmed by r, is
// elected. y's check, begun before S's ended, ends a moment later showing
// WAL S wrote after its position was read (y replays close behind). The
// master, elected and healthy, must not lose its role for that.
func TestElectedMasterKeptWhenACascadeCheckEndsLater(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	s := master(2, 1000, "n2")
	r := replica("n2", 2, 2, 1000)
	r.StartTime = t0.Add(-2 * time.Hour)
	r.UpstreamHost, r.UpstreamPort = "10.0.0.1", 5432
	y := replica("n3", 2, 2, 1200) // cascades from n2
	y.StartTime = t0.Add(-3 * time.Hour)
	y.UpstreamHost, y.UpstreamPort = "10.0.0.2", 5432
	s.StartTime = t0.Add(-time.Hour)
	c.CheckOK(1, s, at(1), at(3), "10.0.0.1")
	c.CheckOK(2, r, at(1), at(4), "10.0.0.2")
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: S not elected once r confirmed it: %v", c.Node(1).Role)
	}
	c.TakeReady()
	c.CheckOK(3, y, at(2), at(6), "10.0.0.3")
	rd := c.TakeReady()
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Errorf("the elected, healthy master lost its role when a cascading replica's check, begun during S's, ended: role %v, roles changed %+v, cut %v, reset %v", c.Node(1).Role, rd.RoleChanges, rd.Cut, rd.Reset)
	}
	s.LSN = 1300
	c.CheckOK(1, s, at(500), at(501), "10.0.0.1")
	rd = c.TakeReady()
	for _, rc := range rd.RoleChanges {
		if rc.Failover {
			t.Errorf("a failover reported on a healthy cluster at start: %+v", rc)
		}
	}
}

// S (n1), elected at its first writable check, and T (n4), a server
// promoted apart on the same timeline number, make a split brain; S is
// not checked again (it hangs), and a replica that says it follows T
// (which lists no walsender yet) showed WAL past S's position. Deriving the
// roles again, with nothing new, must leave the split brain as it is: S's
// first check was unordered with that replica's only while S was not
// elected, and it was; the replica's position is compared at S's next
// check. (S lost the role in the split brain, its first check was then
// taken for an unordered one, and T was elected on the next event,
// whatever it was: a rogue's answer in the simulation, seed 61049151.)
func TestSplitBrainHeldWhenNothingChanged(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(4))
	s := master(2, 1000, "n2")
	r := replica("n2", 2, 2, 1000)
	r.UpstreamHost, r.UpstreamPort = "10.0.0.1", 5432
	c.CheckOK(2, r, at(1), at(2), "10.0.0.2")
	c.CheckOK(3, replica("n3", 2, 2, 900), at(1), at(2), "10.0.0.3")
	c.CheckOK(4, replica("n4", 2, 2, 900), at(1), at(2), "10.0.0.4")
	c.CheckOK(1, s, at(3), at(4), "10.0.0.1")
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: S not elected: %v", c.Node(1).Role)
	}
	y := replica("n3", 2, 2, 1150)
	y.UpstreamHost, y.UpstreamPort = "10.0.0.4", 5432
	c.CheckOK(3, y, at(90), at(95), "10.0.0.3")
	tt := master(2, 1150)
	tt.Name, tt.StartTime = "n4", t0.Add(-time.Hour)
	c.CheckOK(4, tt, at(100), at(101), "10.0.0.4")
	for round := range 3 {
		e := c.Elected()
		if e.Master != nil {
			t.Fatalf("round %d: %s elected, the split brain broken with nothing new", round, e.Master.Addr)
		}
		if len(e.SplitBrain) != 2 {
			t.Fatalf("round %d: split brain %v, want S and T", round, e.SplitBrain)
		}
		c.Reconsider(at(200 + round))
	}
}
