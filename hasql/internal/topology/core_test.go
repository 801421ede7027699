package topology

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// Direct tests of single rules, event by event.

var t0 = time.Unix(1_700_000_000, 0)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

const sys = 6000000000000000001

func master(tl uint32, lsn checker.LSN, replicas ...string) checker.Result {
	r := checker.Result{Timeline: tl, LSN: lsn, SystemID: sys, StartTime: t0, Name: "n1"}
	for _, n := range replicas {
		r.Replicas = append(r.Replicas, checker.Replica{ApplicationName: n, SyncState: "async", ClientAddr: "10.0.0." + n[1:], State: "streaming"})
	}
	return r
}

func replica(name string, tl, recvTL uint32, lsn checker.LSN) checker.Result {
	return checker.Result{InRecovery: true, ReadOnly: true, Timeline: tl, ReceiveTimeline: recvTL, LSN: lsn, ReceiveLSN: lsn,
		SystemID: sys, StartTime: t0.Add(time.Duration(len(name)) * time.Second), Name: name}
}

func members(n int) []Member {
	var out []Member
	for i := 1; i <= n; i++ {
		h := "10.0.0." + string(rune('0'+i))
		out = append(out, Member{ID: ID(i), Addr: h + ":5432", Host: h, Trusted: true})
	}
	return out
}

func logged(r Ready, text string) bool {
	return slices.ContainsFunc(r.Logs, func(l Log) bool { return strings.Contains(l.Msg, text) })
}

func TestEmptySetIgnored(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	c.TakeReady()
	c.SetMembers(at(1), nil)
	if r := c.TakeReady(); len(c.Nodes()) != 2 || !logged(r, "empty node set was ignored") {
		t.Fatalf("the set: %d nodes, logs %+v", len(c.Nodes()), r.Logs)
	}
}

func TestRemovedMasterCutAtOnce(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	c.CheckOK(1, master(1, 100, "n2"), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 100), at(1), at(3), "10.0.0.2")
	c.TakeReady()
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("master %v", m)
	}
	c.SetMembers(at(10), members(2)[1:])
	r := c.TakeReady()
	if !slices.Contains(r.Cut, 1) {
		t.Fatalf("the master left the set: cut %v, want node 1", r.Cut)
	}
}

func TestDetachedForAMomentIsNotWarned(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	c.CheckOK(1, master(2, 200, "n2"), at(1), at(2), "10.0.0.1")
	// The replica's walreceiver still shows the old timeline: detached.
	c.CheckOK(2, replica("n2", 1, 1, 150), at(3), at(4), "10.0.0.2")
	r := c.TakeReady()
	if c.Node(2).Role != RoleDetached {
		t.Fatalf("role %s", c.Node(2).Role)
	}
	if logged(r, "node detached") {
		t.Fatal("warned at the first check that found it detached")
	}
	// Its next check: it follows timeline 2. Nothing was warned.
	c.CheckOK(2, replica("n2", 2, 2, 200), at(10), at(11), "10.0.0.2")
	if r := c.TakeReady(); logged(r, "node detached") || !c.Node(2).Role.IsReplica() {
		t.Fatalf("role %s, logs %+v", c.Node(2).Role, r.Logs)
	}
	// Detached on two checks of its own: warned once.
	c.CheckOK(1, master(3, 300), at(20), at(21), "10.0.0.1")
	c.CheckOK(2, replica("n2", 2, 2, 210), at(22), at(23), "10.0.0.2")
	c.CheckOK(2, replica("n2", 2, 2, 210), at(30), at(31), "10.0.0.2")
	if r := c.TakeReady(); !logged(r, "node detached") {
		t.Fatalf("no warning after two checks found it detached: %+v", r.Logs)
	}
}

func TestFlappingNodeDamped(t *testing.T) {
	c := New(Config{FlapCount: 2, FlapWindow: time.Minute, FlapCooldown: 10 * time.Second})
	c.SetMembers(at(0), members(2))
	c.CheckOK(1, master(1, 100, "n2"), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 100), at(1), at(3), "10.0.0.2")
	for i := 0; i < 2; i++ {
		c.CheckFailed(2, errors.New("connection refused"), false, at(1000+2000*i))
		c.CheckOK(2, replica("n2", 1, 1, 100), at(1500+2000*i), at(1501+2000*i), "10.0.0.2")
	}
	if x := c.Node(2); !x.Damped || !x.Role.IsReplica() {
		t.Fatalf("after two ups in a minute: damped %v, role %s", x.Damped, x.Role)
	}
	c.CheckOK(2, replica("n2", 1, 1, 100), at(20000), at(20001), "10.0.0.2")
	if c.Node(2).Damped {
		t.Fatal("still damped after the cool-down")
	}
	// The master flapping stays master.
	for i := 0; i < 2; i++ {
		c.CheckFailed(1, errors.New("connection refused"), false, at(30000+2000*i))
		c.CheckOK(1, master(1, 100, "n2"), at(30500+2000*i), at(30501+2000*i), "10.0.0.1")
	}
	if m := c.Elected().Master; m == nil || m.ID != 1 || !m.Damped {
		t.Fatalf("a damped master must stay master: %+v", c.Elected())
	}
}

// cachedList is a master's check that reused the walsenders it read
// earlier (checker.Result.ReplicasCached).
func cachedList(r checker.Result) checker.Result {
	r.ReplicasCached = true
	return r
}

func TestWantReplicasAfterAReplicaChanged(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2"}}) // n2 is believed once a master lists it
	if c.WantReplicas(1, at(100), 500*time.Millisecond) {
		t.Fatal("a node never checked: nothing to ask")
	}
	c.CheckOK(1, master(1, 100, "n2"), at(10), at(11), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 100), at(12), at(13), "10.0.0.2")
	if !c.WantReplicas(1, at(100), 500*time.Millisecond) {
		t.Fatal("a replica came up after the master's read: read them again")
	}
	if c.WantReplicas(2, at(100), 500*time.Millisecond) {
		t.Fatal("asked a replica for a master's walsenders")
	}
	c.CheckOK(1, master(1, 110, "n2"), at(20), at(21), "10.0.0.1")
	if c.WantReplicas(1, at(100), 500*time.Millisecond) || !c.Node(2).Vouched || !c.Node(2).Role.IsReplica() {
		t.Fatalf("read after the change: want %v, n2 vouched %v, role %s", c.WantReplicas(1, at(100), 500*time.Millisecond), c.Node(2).Vouched, c.Node(2).Role)
	}
	// Quiet checks: the list reused, the replica the same.
	c.CheckOK(2, replica("n2", 1, 1, 110), at(30), at(31), "10.0.0.2")
	c.CheckOK(1, cachedList(master(1, 120, "n2")), at(32), at(33), "10.0.0.1")
	if c.WantReplicas(1, at(100), 500*time.Millisecond) || !c.Node(2).Role.IsReplica() {
		t.Fatalf("quiet: want %v, n2 %s", c.WantReplicas(1, at(100), 500*time.Millisecond), c.Node(2).Role)
	}
	// The replica restarts: the reused list was read before it came
	// back, and vouches for nothing until the next read; which is due.
	restarted := replica("n2", 1, 1, 120)
	restarted.StartTime = restarted.StartTime.Add(time.Hour)
	c.CheckOK(2, restarted, at(40), at(41), "10.0.0.2")
	if !c.WantReplicas(1, at(100), 500*time.Millisecond) {
		t.Fatal("a replica restarted: read them again")
	}
	c.CheckOK(1, cachedList(master(1, 130, "n2")), at(42), at(43), "10.0.0.1")
	if c.Node(2).Vouched {
		t.Fatal("a list read before the replica restarted vouched for it")
	}
	c.CheckOK(1, master(1, 140, "n2"), at(50), at(51), "10.0.0.1")
	if !c.Node(2).Vouched || c.WantReplicas(1, at(100), 500*time.Millisecond) {
		t.Fatalf("after a read: vouched %v, want %v", c.Node(2).Vouched, c.WantReplicas(1, at(100), 500*time.Millisecond))
	}
	// Its walreceiver stops (no upstream): due again; and so after it
	// went down, or the set changed.
	gone := replica("n2", 1, 0, 140)
	gone.StartTime = restarted.StartTime
	c.CheckOK(2, gone, at(60), at(61), "10.0.0.2")
	if !c.WantReplicas(1, at(100), 500*time.Millisecond) {
		t.Fatal("a replica's walreceiver went away: read them again")
	}
	c.CheckOK(1, master(1, 150), at(62), at(63), "10.0.0.1")
	c.CheckFailed(2, errors.New("connection refused"), false, at(70))
	if !c.WantReplicas(1, at(100), 500*time.Millisecond) {
		t.Fatal("a replica went down: read them again")
	}
	c.CheckOK(1, master(1, 160), at(72), at(73), "10.0.0.1")
	if !c.WantReplicas(1, at(100), 500*time.Millisecond) {
		t.Fatal("a replica is down: read them at every check, it may come back any moment")
	}
	// It comes back and the master lists it: quiet again.
	back := replica("n2", 1, 1, 160)
	back.StartTime = restarted.StartTime
	c.CheckOK(2, back, at(74), at(75), "10.0.0.2")
	c.CheckOK(1, master(1, 160, "n2"), at(76), at(77), "10.0.0.1")
	if c.WantReplicas(1, at(78), 500*time.Millisecond) || !c.Node(2).Role.IsReplica() {
		t.Fatalf("listed again: want %v, role %s", c.WantReplicas(1, at(78), 500*time.Millisecond), c.Node(2).Role)
	}
	if c.WantNames(1) {
		t.Fatal("nothing changed since the last read: the names stand")
	}
	c.SetMembers(at(80), members(2))
	if !c.WantReplicas(1, at(100), 500*time.Millisecond) || !c.WantNames(1) {
		t.Fatal("the set changed: read them again, and name them afresh")
	}
	c.CheckOK(1, master(1, 170, "n2"), at(90), at(91), "10.0.0.1")
	if c.WantNames(1) || c.WantNames(2) {
		t.Fatal("read after the change: the names stand; a replica has none to name")
	}
	if c.WantReplicas(1, at(100), 500*time.Millisecond) || !c.WantReplicas(1, at(90).Add(ReplicasMaxAge), 500*time.Millisecond) {
		t.Fatalf("read at 90 ms: want at 100 ms %v, want %s later %v", c.WantReplicas(1, at(100), 500*time.Millisecond), ReplicasMaxAge, c.WantReplicas(1, at(90).Add(ReplicasMaxAge), 500*time.Millisecond))
	}
	// At 1.5 s they are read at 2 s, by the fourth check at 500 ms; with
	// checks 1.9 s apart, by the second: reused once more, they would
	// stand until 3.8 s.
	if c.WantReplicas(1, at(90).Add(1500*time.Millisecond), 500*time.Millisecond) {
		t.Fatal("1.5 s old, the next check 500 ms away: reused")
	}
	if !c.WantReplicas(1, at(90).Add(1900*time.Millisecond), 1900*time.Millisecond) {
		t.Fatal("1.9 s old, the next check 1.9 s away: read")
	}
	if c.WantReplicas(1, at(100), 1900*time.Millisecond) {
		t.Fatal("10 ms old, the next check 1.9 s away: reused")
	}
}

// A list read before a replica's server replaced the one before (reused
// by a master's check that began after the restart) says nothing of it:
// not sync, not following, until a read that began once it was there.
func TestReusedListPredatesARestartedReplica(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		c := New(Config{})
		set := members(3)
		set[1].Trusted = trusted
		c.SetMembers(at(0), set)
		m := master(1, 100, "n2", "n3")
		m.Replicas[0].SyncState, m.Replicas[0].ReplayLSN = "sync", 100      // FIRST 1 (n2, n3)
		m.Replicas[1].SyncState, m.Replicas[1].ReplayLSN = "potential", 100 //
		c.CheckOK(2, replica("n2", 1, 1, 100), at(2), at(3), "10.0.0.2")
		r3 := replica("n3", 1, 1, 100)
		r3.StartTime = t0.Add(3 * time.Second)
		c.CheckOK(3, r3, at(2), at(3), "10.0.0.3")
		c.CheckOK(1, m, at(5), at(6), "10.0.0.1")
		c.CheckOK(1, m, at(10), at(11), "10.0.0.1")
		if c.WantReplicas(1, at(510), 500*time.Millisecond) || c.Node(2).Role != RoleSyncReplica {
			t.Fatalf("trusted %v: quiet: want %v, n2 %s", trusted, c.WantReplicas(1, at(510), 500*time.Millisecond), c.Node(2).Role)
		}
		c.CheckOK(1, cachedList(m), at(510), at(511), "10.0.0.1")
		// n2 restarts; the master's check that began at 1010 ms, before
		// anything showed it, reuses the list read at 10 ms.
		restarted := replica("n2", 1, 1, 150)
		restarted.StartTime = t0.Add(time.Hour)
		c.CheckOK(2, restarted, at(1005), at(1015), "10.0.0.2")
		c.CheckOK(1, cachedList(m), at(1010), at(1020), "10.0.0.1")
		if x := c.Node(2); x.Role.IsReplica() {
			t.Fatalf("trusted %v: a row read before n2's server started makes it %s (sync %q)", trusted, x.Role, x.SyncState)
		}
		if !c.WantReplicas(1, at(1510), 500*time.Millisecond) {
			t.Fatalf("trusted %v: n2 does not follow: read them", trusted)
		}
		fresh := master(1, 200, "n2", "n3")
		fresh.Replicas[0].SyncState, fresh.Replicas[1].SyncState = "potential", "sync" // n2 catches up
		c.CheckOK(1, fresh, at(1510), at(1511), "10.0.0.1")
		if x := c.Node(2); x.Role != RoleAsyncReplica {
			t.Fatalf("trusted %v: after a read: n2 %s", trusted, x.Role)
		}
	}
}

// The master reached through a second address (a virtual IP) is read
// like the master: its alias does not ask for the walsenders at every
// check.
func TestAliasOfTheMasterReusesTheList(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{
		{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
		{ID: 5, Addr: "10.0.0.9:5432", Host: "10.0.0.9", Trusted: true}, // a VIP on n1
	})
	for i := 0; i < 4; i++ {
		b := 10 + 500*i
		c.CheckOK(1, master(1, checker.LSN(100+i), "n2"), at(b), at(b+1), "10.0.0.1")
		c.CheckOK(5, master(1, checker.LSN(100+i), "n2"), at(b), at(b+1), "10.0.0.9")
		c.CheckOK(2, replica("n2", 1, 1, checker.LSN(100+i)), at(b+2), at(b+3), "10.0.0.2")
	}
	if c.Node(5).AliasOf != c.Node(1) {
		t.Fatal("node 5 is not taken for n1's alias")
	}
	if c.WantReplicas(1, at(1600), 500*time.Millisecond) || c.WantReplicas(5, at(1600), 500*time.Millisecond) {
		t.Fatalf("quiet: want master %v, alias %v", c.WantReplicas(1, at(1600), 500*time.Millisecond), c.WantReplicas(5, at(1600), 500*time.Millisecond))
	}
}

// A VIP (node 5) on replica n2 moves to replica n3 (not otherwise in the
// set), which is behind: its next check shows another server of the
// cluster on the same timeline, under n3's name and streaming. That is not
// n2 restarted: node 5 is no longer n2's alias, and has n3's lag, not n2's
// 0. (A restart keeps the name; the alias carried over a restart until
// n2's next check, and a moved name was taken for one.)
func TestMovedVIPIsNotARestart(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{
		{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
		{ID: 5, Addr: "10.0.0.9:5432", Host: "10.0.0.9", Trusted: true}, // a VIP on n2
	})
	m := master(1, 200, "n2", "n3")
	m.Replicas[0].ReplayLSN, m.Replicas[1].ReplayLSN = 200, 150
	n2 := replica("n2", 1, 1, 200)
	n3 := replica("n3", 1, 1, 150)
	n3.StartTime = n2.StartTime.Add(time.Hour) // another server
	c.CheckOK(1, m, at(10), at(11), "10.0.0.1")
	c.CheckOK(2, n2, at(12), at(13), "10.0.0.2")
	c.CheckOK(5, n2, at(16), at(17), "10.0.0.9")
	if c.Node(5).AliasOf != c.Node(2) {
		t.Fatalf("setup: node 5 is not n2's alias: %v", c.Node(5).AliasOf)
	}
	c.CheckOK(5, n3, at(516), at(517), "10.0.0.9")
	x := c.Node(5)
	if x.AliasOf == c.Node(2) {
		t.Fatalf("the VIP moved to n3 and is still n2's alias (lag %d bytes, as n2's)", x.LagBytes)
	}
	if x.LagBytes != 50 {
		t.Errorf("the VIP on n3 (50 bytes behind) has lag %d bytes, role %s", x.LagBytes, x.Role)
	}
}
