package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// n1 is a DNS name of one host with two addresses (dual-stack, or two
// NICs behind one name): each time its check connection is opened afresh
// it may reach either. The others are plain IPs.
func dualStackMembers(n int) []Member {
	ms := members(n)
	ms[0].Addr, ms[0].Host = "db1.example:5432", "db1.example"
	return ms
}

// S (n1) is the healthy master of a cluster under writes, r (n2) a
// replica it lists, y (n3) a replica cascading from r (S does not list
// it): y replays close behind S, and its checks overlap S's. S's check
// reaches 10.0.0.1 and fd00::1 in turn (one host). S is held at its first writable check at
// each address, once: counted again at every change of address, every
// check of S was its first writable check, and S was never elected while
// y's checks kept overlapping.
func TestMasterReachedAtTwoAddressesOfItsHostIsElected(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), dualStackMembers(3))
	ips := []string{"10.0.0.1", "fd00::1"}
	elected := 0
	for round := range 8 {
		base := 1000 * round
		lsn := checker.LSN(1000 + 1000*round)
		s := master(2, lsn, "n2")
		s.StartTime = t0.Add(-time.Hour)
		r := replica("n2", 2, 2, lsn)
		r.UpstreamHost, r.UpstreamPort = "10.0.0.1", 5432
		y := replica("n3", 2, 2, lsn+200) // S's WAL, written after S's position was read
		y.UpstreamHost, y.UpstreamPort = "10.0.0.2", 5432
		c.CheckOK(2, r, at(base+1), at(base+3), "10.0.0.2")
		c.CheckOK(3, y, at(base+2), at(base+6), "10.0.0.3")
		c.CheckOK(1, s, at(base+2), at(base+7), ips[round%2])
		if m := c.Elected().Master; m != nil && m.ID == 1 {
			elected++
		}
	}
	if elected < 6 {
		t.Fatalf("the healthy master S elected after %d of 8 checks (role %s, waiting %q): each check reached the other address of its own host",
			elected, c.Node(1).Role, c.Node(1).Waiting)
	}
}

// S (n1) is elected; T (n4), promoted apart on the same timeline number,
// makes a split brain, and the core holds the tie (see
// TestSplitBrainHeldWhenNothingChanged). S's check connection is then
// opened afresh and reaches the other address of S's host (dual-stack);
// a check of y, cascading from r (S's replica), overlaps it and shows S's
// WAL written after. Nothing says which of S and T is the master: the tie
// holds. (Taken for S's first writable check, with S's election forgotten,
// it held S back and elected T, the server promoted apart: S's
// acknowledged writes on its branch were lost.)
func TestSplitBrainHeldWhenACheckReachesAnotherAddressOfTheHost(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), dualStackMembers(4))
	s := master(2, 1000, "n2")
	s.StartTime = t0.Add(-time.Hour)
	r := replica("n2", 2, 2, 1000)
	r.UpstreamHost, r.UpstreamPort = "10.0.0.1", 5432
	y := replica("n3", 2, 2, 1000)
	y.UpstreamHost, y.UpstreamPort = "10.0.0.2", 5432
	c.CheckOK(2, r, at(1), at(2), "10.0.0.2")
	c.CheckOK(3, y, at(1), at(2), "10.0.0.3")
	c.CheckOK(4, replica("n4", 2, 2, 900), at(1), at(2), "10.0.0.4")
	c.CheckOK(1, s, at(3), at(4), "10.0.0.1")
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: S not elected: %v %q", c.Node(1).Role, c.Node(1).Waiting)
	}
	tt := master(2, 1300)
	tt.Name, tt.StartTime = "n4", t0.Add(-2*time.Hour)
	c.CheckOK(4, tt, at(100), at(101), "10.0.0.4")
	tt.LSN = 1320
	c.CheckOK(4, tt, at(150), at(151), "10.0.0.4")
	if e := c.Elected(); e.Master != nil || len(e.SplitBrain) != 2 {
		t.Fatalf("setup: want a split brain of S and T, got master %v, split %v", e.Master, e.SplitBrain)
	}
	// Control: the same overlap at S's usual address keeps the tie.
	s.LSN, r.LSN, r.ReceiveLSN = 1050, 1050, 1050
	y.LSN, y.ReceiveLSN = 1150, 1150
	c.CheckOK(2, r, at(200), at(201), "10.0.0.2")
	c.CheckOK(3, y, at(202), at(206), "10.0.0.3")
	c.CheckOK(1, s, at(203), at(207), "10.0.0.1")
	if e := c.Elected(); e.Master != nil || len(e.SplitBrain) != 2 {
		t.Fatalf("control: split brain broken at S's usual address: master %v, split %v", e.Master, e.SplitBrain)
	}
	// S's check reaches the other address of its host.
	s.LSN, r.LSN, r.ReceiveLSN = 1200, 1200, 1200
	y.LSN, y.ReceiveLSN = 1350, 1350
	tt.LSN = 1400
	c.CheckOK(2, r, at(300), at(301), "10.0.0.2")
	c.CheckOK(3, y, at(302), at(306), "10.0.0.3")
	c.CheckOK(1, s, at(303), at(307), "fd00::1")
	c.CheckOK(4, tt, at(310), at(311), "10.0.0.4")
	for round := range 3 {
		if e := c.Elected(); e.Master != nil || len(e.SplitBrain) != 2 {
			t.Fatalf("round %d: the split brain broken when S's check reached its host's other address: master %v (S role %s, waiting %q), split %v",
				round, e.Master.Addr, c.Node(1).Role, c.Node(1).Waiting, e.SplitBrain)
		}
		c.Reconsider(at(400 + round))
	}
}
