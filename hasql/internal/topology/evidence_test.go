package topology

// What replicas prove of a writable node's branch (provenBehind) when its
// name moves, its server restarts under another name, it is reached
// through an alias, or discovery reports it again; and the alias carried
// over a restart when nothing vouches for the rows that would allow it.

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

func rcWritable(name string, tl uint32, lsn checker.LSN, start time.Time, rows ...checker.Replica) checker.Result {
	return checker.Result{Timeline: tl, LSN: lsn, SystemID: sys, StartTime: start, Name: name, Replicas: rows}
}

func rcReplica(name string, tl uint32, lsn checker.LSN, start time.Time, upstream string) checker.Result {
	return checker.Result{InRecovery: true, ReadOnly: true, Timeline: tl, ReceiveTimeline: tl, LSN: lsn, ReceiveLSN: lsn,
		SystemID: sys, StartTime: start, Name: name, UpstreamHost: upstream, UpstreamPort: 5432}
}

// noRecvReplica is replica y on timeline 2 at lsn with no walreceiver to
// see (its upstream gone, or a check user without pg_monitor).
func noRecvReplica(lsn checker.LSN, start time.Time) checker.Result {
	r := rcReplica("y", 2, lsn, start, "")
	r.ReceiveTimeline, r.UpstreamPort = 0, 0
	return r
}

func rcMember(id ID, host string, trusted bool) Member {
	return Member{ID: id, Addr: host + ":5432", Host: host, Trusted: trusted}
}

// A name moved off a rogue-promoted server R onto the true master T of
// the same timeline number: replica y, which proved R behind, streams from
// T, whose walsenders list it. T is not stale, whether it answers under a
// name of its own or, as where every server has the same cluster_name
// (Debian's "16/main", Patroni's scope), under R's.
func TestSharedNameMovedOntoTheTrueMaster(t *testing.T) {
	for _, tName := range []string{"t", "batman"} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
		sR, sT, sY := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
		// n1 reaches R (promoted apart on timeline 2, at 1000); y holds
		// T's timeline-2 WAL up to 1500, streaming from T's own host.
		c.CheckOK(1, rcWritable("batman", 2, 1000, sR), at(1), at(2), "10.0.0.1")
		c.CheckOK(2, rcReplica("y", 2, 1500, sY, "10.0.0.7"), at(3), at(4), "10.0.0.2")
		c.CheckOK(1, rcWritable("batman", 2, 1000, sR), at(5), at(6), "10.0.0.1")
		if x := c.Node(1); !x.Stale || c.Elected().Master != nil {
			t.Fatalf("%s: setup: R must be stale behind y: stale %v, master %v", tName, x.Stale, c.Elected().Master)
		}
		// The name n1 moves onto T, the true master, which y streams from.
		row := checker.Replica{ApplicationName: "y", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "async", ReplayLSN: 3000}
		for i := range 5 {
			ms := 500 + 500*i
			lsn := checker.LSN(3000 + 100*i)
			c.CheckOK(1, rcWritable(tName, 2, lsn, sT, row), at(ms), at(ms+1), "10.0.0.1")
			c.CheckOK(2, rcReplica("y", 2, lsn, sY, "10.0.0.7"), at(ms+2), at(ms+3), "10.0.0.2")
		}
		e, x := c.Elected(), c.Node(1)
		t.Logf("T named %q: master %v, n1 role %s stale %v, stale list %v", tName, e.Master != nil, x.Role, x.Stale, e.Stale)
		if e.Master == nil || e.Master.ID != 1 {
			t.Errorf("T named %q (R was %q): the true master, which y streams from and whose walsenders list y, is %s: writes refused for good (%v)",
				tName, "batman", x.Role, e.Stale)
		}
	}
}

// The other way: a stale master S whose proof has faded (it wrote past y's
// position: another application, archive_timeout, its own restart's
// checkpoint) stays stale only by the evidence y.ahead. Neither a VIP (or
// DNS name) that flips to another server and back, nor a restart under
// another cluster_name, may drop that evidence and have S elected on a branch
// y proves superseded (y holds acknowledged writes S never had).
func TestStaleEvidenceSurvivesANameFlip(t *testing.T) {
	for _, how := range []string{"none (control)", "vip-flip", "restart-renamed"} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
		sS, sY, sQ := t0.Add(-time.Hour), t0.Add(-3*time.Hour), t0.Add(-4*time.Hour)
		c.CheckOK(1, rcWritable("main", 2, 1000, sS), at(1), at(2), "10.0.0.1")
		// y: the dead true master's branch of timeline 2, up to 1500; its
		// walreceiver is gone (upstream dead).
		y := noRecvReplica(1500, sY)
		c.CheckOK(2, y, at(3), at(4), "10.0.0.2")
		c.CheckOK(1, rcWritable("main", 2, 1000, sS), at(5), at(6), "10.0.0.1")
		if !c.Node(1).Stale {
			t.Fatalf("%s: setup: S not stale", how)
		}
		// S writes on past y's position: still stale by the evidence.
		c.CheckOK(1, rcWritable("main", 2, 2000, sS), at(100), at(101), "10.0.0.1")
		c.CheckOK(2, y, at(102), at(103), "10.0.0.2")
		c.CheckOK(1, rcWritable("main", 2, 2000, sS), at(104), at(105), "10.0.0.1")
		if !c.Node(1).Stale || c.Elected().Master != nil {
			t.Fatalf("%s: setup: S, faded, must stay stale by the evidence", how)
		}
		switch how {
		case "vip-flip":
			// The VIP flips to replica Q for one check, then back to S.
			c.CheckOK(1, rcReplica("q", 2, 900, sQ, "10.0.0.1"), at(200), at(201), "10.0.0.1")
			c.CheckOK(1, rcWritable("main", 2, 2000, sS), at(400), at(401), "10.0.0.1")
		case "restart-renamed":
			// S restarts under another cluster_name (its restart writes a
			// checkpoint: still past y).
			c.CheckOK(1, rcWritable("main2", 2, 2100, t0.Add(time.Minute)), at(400), at(401), "10.0.0.1")
		}
		for i := range 4 {
			ms := 600 + 500*i
			c.CheckOK(2, y, at(ms), at(ms+1), "10.0.0.2")
			c.CheckOK(1, c.Node(1).Res, at(ms+2), at(ms+3), "10.0.0.1")
		}
		e := c.Elected()
		t.Logf("%s: master %v, n1 %s stale %v", how, e.Master != nil, c.Node(1).Role, c.Node(1).Stale)
		if e.Master != nil {
			t.Errorf("%s: S, proven behind vouched replica y on timeline 2, is elected master: writes go to a superseded branch", how)
		}
	}
}

// The evidence holds against the server, not only the node's ID: a
// discoverer that drops the stale master's address and reports it again (a
// new ID) must not forget it and have the faded stale master elected.
func TestStaleEvidenceSurvivesRediscovery(t *testing.T) {
	for _, readd := range []bool{false, true} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
		sS, sY := t0.Add(-time.Hour), t0.Add(-3*time.Hour)
		y := noRecvReplica(1500, sY)
		c.CheckOK(1, rcWritable("main", 2, 1000, sS), at(1), at(2), "10.0.0.1")
		c.CheckOK(2, y, at(3), at(4), "10.0.0.2")
		c.CheckOK(1, rcWritable("main", 2, 1000, sS), at(5), at(6), "10.0.0.1")
		c.CheckOK(1, rcWritable("main", 2, 2000, sS), at(100), at(101), "10.0.0.1")
		if !c.Node(1).Stale {
			t.Fatal("setup: S not stale")
		}
		id := ID(1)
		if readd {
			c.SetMembers(at(200), []Member{rcMember(2, "10.0.0.2", true)})
			c.SetMembers(at(300), []Member{rcMember(3, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
			id = 3
		}
		for i := range 4 {
			ms := 400 + 500*i
			c.CheckOK(id, rcWritable("main", 2, 2000, sS), at(ms), at(ms+1), "10.0.0.1")
			c.CheckOK(2, y, at(ms+2), at(ms+3), "10.0.0.2")
		}
		t.Logf("re-added %v: master %v", readd, c.Elected().Master != nil)
		if e := c.Elected(); e.Master != nil {
			t.Errorf("re-added %v: S, proven behind y, is elected master", readd)
		}
	}
}

// The evidence holds for the server at every address: the stale master S,
// reached through its address n1 and a VIP (its alias, hidden from the
// election), is proven behind y at n1. Once n1 stops answering (its own
// address's route, or discovery dropping it), the VIP stands for S, and
// the faded S must not be elected through it.
func TestStaleEvidenceHoldsForAnAlias(t *testing.T) {
	for _, drop := range []bool{false, true} {
		c := New(Config{})
		const vip ID = 5
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(vip, "10.0.0.9", true)})
		sS, sY := t0.Add(-time.Hour), t0.Add(-3*time.Hour)
		y := noRecvReplica(1500, sY)
		c.CheckOK(1, rcWritable("main", 2, 1000, sS), at(1), at(2), "10.0.0.1")
		c.CheckOK(vip, rcWritable("main", 2, 1000, sS), at(1), at(2), "10.0.0.9")
		c.CheckOK(2, y, at(3), at(4), "10.0.0.2")
		c.CheckOK(1, rcWritable("main", 2, 1000, sS), at(5), at(6), "10.0.0.1")
		c.CheckOK(vip, rcWritable("main", 2, 1000, sS), at(5), at(6), "10.0.0.9")
		// S writes on past y (the evidence fades).
		for i := range 3 {
			ms := 100 + 100*i
			c.CheckOK(1, rcWritable("main", 2, 2000, sS), at(ms), at(ms+1), "10.0.0.1")
			c.CheckOK(vip, rcWritable("main", 2, 2000, sS), at(ms), at(ms+1), "10.0.0.9")
			c.CheckOK(2, y, at(ms+2), at(ms+3), "10.0.0.2")
		}
		if !c.Node(1).Stale || c.Node(vip).AliasOf != c.Node(1) || c.Elected().Master != nil {
			t.Fatalf("setup: n1 stale %v, vip alias %v, master %v", c.Node(1).Stale, c.Node(vip).AliasOf != nil, c.Elected().Master)
		}
		if drop {
			c.CheckFailed(1, errors.New("connection refused"), false, at(500))
		}
		for i := range 4 {
			ms := 600 + 500*i
			c.CheckOK(vip, rcWritable("main", 2, 2000, sS), at(ms), at(ms+1), "10.0.0.9")
			c.CheckOK(2, y, at(ms+2), at(ms+3), "10.0.0.2")
			if drop {
				c.CheckFailed(1, errors.New("connection refused"), false, at(ms+4))
			} else {
				c.CheckOK(1, rcWritable("main", 2, 2000, sS), at(ms+4), at(ms+5), "10.0.0.1")
			}
		}
		e := c.Elected()
		t.Logf("n1 down %v: master %v, vip %s", drop, e.Master != nil, c.Node(vip).Role)
		if e.Master != nil {
			t.Errorf("n1 down %v: S, proven behind y (at n1), is elected master through its other address", drop)
		}
	}
}

// The exception for a restarted replica whose walreceiver has not started
// applies only where a writable node's walsenders show addresses (the
// check user has pg_monitor), judged from vouched nodes only: a rogue in
// the discovered set whose made-up rows show addresses must not turn it on
// in a cluster whose check user lacks pg_monitor, where a VIP moved from
// replica n2 to n3 (behind) would stay n2's alias with n2's lag 0. The
// control (no rogue) passes.
func TestRogueRowsDoNotCarryAnAlias(t *testing.T) {
	for _, rogue := range []bool{false, true} {
		c := New(Config{})
		const vip, n3rogue ID = 5, 9
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true),
			rcMember(vip, "10.0.0.9", true), rcMember(n3rogue, "10.0.0.66", false)})
		hidden := func(names ...string) []checker.Replica {
			var rows []checker.Replica
			for _, n := range names {
				rows = append(rows, checker.Replica{ApplicationName: n})
			}
			return rows
		}
		m := rcWritable("n1", 1, 200, t0.Add(-time.Hour), hidden("n2", "n3")...)
		noRecv := func(name string, lsn checker.LSN, start time.Time) checker.Result {
			r := rcReplica(name, 1, lsn, start, "")
			r.ReceiveTimeline, r.UpstreamPort = 0, 0
			return r
		}
		n2 := noRecv("n2", 200, t0.Add(-2*time.Hour))
		n3 := noRecv("n3", 150, t0.Add(-3*time.Hour))
		c.CheckOK(1, m, at(10), at(11), "10.0.0.1")
		c.CheckOK(2, n2, at(12), at(13), "10.0.0.2")
		c.CheckOK(vip, n2, at(16), at(17), "10.0.0.9")
		if rogue {
			c.CheckOK(n3rogue, rcWritable("x", 1, 10, t0.Add(-5*time.Hour),
				checker.Replica{ApplicationName: "z", ClientAddr: "192.0.2.1", State: "streaming", SyncState: "async"}), at(18), at(19), "10.0.0.66")
			if c.Node(n3rogue).Vouched {
				t.Fatal("setup: the rogue is vouched")
			}
		}
		if c.Node(vip).AliasOf != c.Node(2) {
			t.Fatalf("setup: the VIP is not n2's alias")
		}
		c.CheckOK(vip, n3, at(516), at(517), "10.0.0.9")
		x := c.Node(vip)
		t.Logf("rogue %v: vip alias of n2 %v, role %s, lag %d known %v", rogue, x.AliasOf == c.Node(2), x.Role, x.LagBytes, x.LagKnown)
		if x.AliasOf == c.Node(2) {
			t.Errorf("rogue %v: the VIP moved to n3 (50 bytes behind) stays n2's alias, reported with lag %d (known %v)", rogue, x.LagBytes, x.LagKnown)
		}
	}
}

// A VIP listed first stands for master M (M's own address is its alias).
// The VIP moves to W, writable on the same timeline number under the same
// name (Patroni's scope; a server promoted apart): the alias carried over a
// restart would keep M's address hidden, and W would be elected alone
// while M, the master until now, takes writes too. Until M's address is
// checked again there is no master; then the split brain shows, or, when
// W is behind the WAL M's replica y replayed before W was seen, M is
// master and W a stale master. A real restart of M, seen first at the
// VIP, gives no master for that moment too, and then M again, with no
// split brain.
func TestMovedVIPDoesNotHideASplitBrain(t *testing.T) {
	for _, tc := range []struct {
		name  string
		moved bool
		wLSN  checker.LSN
	}{{"moved, W ahead of y", true, 1200}, {"moved, W behind y", true, 900}, {"M restarted", false, 0}} {
		c := New(Config{})
		const vip ID = 5
		c.SetMembers(at(0), []Member{rcMember(vip, "10.0.0.9", true), rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
		row := checker.Replica{ApplicationName: "y", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "async", ReplayLSN: 1000}
		sM := t0.Add(-time.Hour)
		m := rcWritable("main", 2, 1000, sM, row)
		c.CheckOK(vip, m, at(1), at(2), "10.0.0.9")
		c.CheckOK(1, m, at(1), at(3), "10.0.0.1")
		c.CheckOK(2, rcReplica("y", 2, 1000, t0.Add(-3*time.Hour), "10.0.0.1"), at(4), at(5), "10.0.0.2")
		if e := c.Elected(); e.Master == nil || e.Master.ID != vip || c.Node(1).AliasOf != c.Node(vip) {
			t.Fatalf("%s: setup: master %v, M's address alias of %v", tc.name, e.Master, c.Node(1).AliasOf)
		}
		next := rcWritable("main", 2, 1100, sM.Add(2*time.Hour), row) // M restarted
		if tc.moved {
			next = rcWritable("main", 2, tc.wLSN, sM.Add(2*time.Hour)) // W: another server
		}
		c.CheckOK(vip, next, at(500), at(501), "10.0.0.9")
		if e := c.Elected(); e.Master != nil {
			t.Errorf("%s: %s elected while M's address, not checked since the VIP changed server, is hidden as its alias", tc.name, e.Master.Addr)
		}
		// W behind y is a stale master at once; else the VIP waits for M's.
		if x := c.Node(vip); x.Role != RoleStaleMaster && (x.Role != RoleUnknown || !strings.Contains(x.Waiting, "the same server as 10.0.0.1:5432")) {
			t.Errorf("%s: the VIP, not master until M's address is checked again, is %s and says it waits for %q", tc.name, x.Role, x.Waiting)
		}
		again := m
		if !tc.moved {
			again = next
		}
		c.CheckOK(1, again, at(520), at(521), "10.0.0.1")
		e := c.Elected()
		switch {
		case tc.moved && tc.wLSN > 1000 && len(e.SplitBrain) != 2:
			t.Errorf("%s: W at the VIP and M at its own address, both writable on timeline 2: split brain %v, master %v", tc.name, e.SplitBrain, e.Master)
		case tc.moved && tc.wLSN < 1000 && (e.Master == nil || e.Master.ID != 1 || c.Node(vip).Role != RoleStaleMaster):
			t.Errorf("%s: master %v, W %s (stale behind %q), split brain %v", tc.name, e.Master, c.Node(vip).Role, c.Node(vip).StaleBehind, e.SplitBrain)
		case !tc.moved && (e.Master == nil || len(e.SplitBrain) > 0):
			t.Errorf("%s, seen at both addresses: master %v, split brain %v", tc.name, e.Master, e.SplitBrain)
		}
	}
}
