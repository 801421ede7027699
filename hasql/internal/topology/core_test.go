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
