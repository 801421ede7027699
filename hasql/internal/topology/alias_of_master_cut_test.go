package topology

import (
	"errors"
	"slices"
	"testing"
)

// A second address of the master (a virtual IP listed before the
// master's own address) that was down at start answers again and reaches
// the master's server. dedup makes it the representative (first in the
// set's order) and the master's own node its alias: the elected master's
// server is the same, yet the node it was elected through loses the role
// "master" and its connections, with the writes in flight on them, are
// cut. Nothing another server could have taken happened.
func TestMastersNewAliasDoesNotCutTheMaster(t *testing.T) {
	c := New(Config{})
	vip := Member{ID: 9, Addr: "10.0.0.9:5432", Host: "10.0.0.9", Trusted: true}
	set := append([]Member{vip}, members(2)...)
	c.SetMembers(at(0), set)
	c.CheckFailed(9, errors.New("connection refused"), false, at(1))
	c.CheckOK(1, master(1, 100, "n2"), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 100), at(1), at(3), "10.0.0.2")
	c.TakeReady()
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("master %v", m)
	}
	// The virtual IP answers: the master's server, through it.
	c.CheckOK(9, master(1, 120, "n2"), at(500), at(501), "10.0.0.1")
	r := c.TakeReady()
	m := c.Elected().Master
	if m == nil || m.Res.Server() != c.Node(1).Res.Server() {
		t.Fatalf("master %v, want the same server", m)
	}
	if slices.Contains(r.Cut, 1) {
		t.Fatalf("the master's server is still master (now through node %d), yet node 1's connections are cut: %v", m.ID, r.Cut)
	}
}

// The simulation found it with one fault, a hang (seed 7500002, with
// the check that no cut reaches the still-elected master's server): the master's own address times out twice (a blip of
// its network path, the server itself fine), its second address (a VIP)
// stands for it and takes the writes; when the own address answers again
// it stands for the server once more, and the connections opened through
// the VIP, the master's server all along, are cut with their writes.
func TestMastersOwnAddressBackDoesNotCutTheOther(t *testing.T) {
	c := masterAndVIP()
	c.TakeReady()
	if m := c.Elected().Master; m == nil || m.ID != 1 || c.Node(9).AliasOf != c.Node(1) {
		t.Fatalf("master %v, node 9 alias of %v", m, c.Node(9).AliasOf)
	}
	// The own address times out twice: down; the VIP stands for the server.
	ownAddressDown(c)
	c.TakeReady()
	if m := c.Elected().Master; m == nil || m.ID != 9 {
		t.Fatalf("master %v, want node 9 (the VIP)", m)
	}
	// Writes go through node 9 now. The own address answers again.
	c.CheckOK(1, master(1, 140, "n2"), at(200), at(201), "10.0.0.1")
	r := c.TakeReady()
	m := c.Elected().Master
	if m == nil || m.Res.Server() != c.Node(9).Res.Server() {
		t.Fatalf("master %v, want the same server", m)
	}
	if slices.Contains(r.Cut, 9) {
		t.Fatalf("the master's server is still master (now through node %d), yet node 9's connections, which reach it, are cut: %v", m.ID, r.Cut)
	}
}

// The address kept uncut while it reaches
// the master's server is cut once another server is master.
func TestUncutAddressOfTheMasterIsCutAtFailover(t *testing.T) {
	c := masterAndVIP()
	ownAddressDown(c)
	c.CheckOK(1, master(1, 140, "n2"), at(200), at(201), "10.0.0.1")
	cut := c.TakeReady().Cut // node 9 took writes until here: cut now or later
	// The server dies; n2 is promoted.
	c.CheckFailed(1, errors.New("refused"), false, at(300))
	c.CheckFailed(9, errors.New("refused"), false, at(301))
	r := c.TakeReady()
	cut = append(cut, r.Cut...)
	p := replica("n2", 2, 0, 150)
	p.InRecovery, p.ReadOnly = false, false
	c.CheckOK(2, p, at(400), at(401), "10.0.0.2")
	r = c.TakeReady()
	cut = append(cut, r.Cut...)
	if m := c.Elected().Master; m == nil || m.ID != 2 {
		t.Fatalf("master %v, want node 2", m)
	}
	if !slices.Contains(cut, 9) || !slices.Contains(cut, 1) {
		t.Fatalf("another server is master: nodes 1 and 9, which reached the old one, must be cut by then; cut %v", cut)
	}
}

// The address kept uncut while it reaches
// the master's server is cut once that server is found stale (a trusted
// replica shows a newer timeline: a promotion elsewhere).
func TestUncutAddressOfTheMasterIsCutWhenStale(t *testing.T) {
	c := masterAndVIP()
	ownAddressDown(c)
	c.CheckOK(1, master(1, 140, "n2"), at(200), at(201), "10.0.0.1")
	cut := c.TakeReady().Cut // node 9 took writes until here: cut now or later
	// n2 streams timeline 2 now: the server at nodes 1 and 9 is stale.
	c.CheckOK(2, replica("n2", 2, 2, 150), at(300), at(301), "10.0.0.2")
	cut = append(cut, c.TakeReady().Cut...)
	if !c.Node(1).Stale {
		t.Fatalf("node 1: role %s, not stale", c.Node(1).Role)
	}
	if !slices.Contains(cut, 9) || !slices.Contains(cut, 1) {
		t.Fatalf("the server at nodes 1 and 9 is stale: both must be cut by then; cut %v", cut)
	}
}

// masterAndVIP is a master, n1, with a replica, n2, and a second address
// of n1's server (node 9, a virtual IP) listed last, each checked once.
func masterAndVIP() *Core {
	c := New(Config{})
	vip := Member{ID: 9, Addr: "10.0.0.9:5432", Host: "10.0.0.9", Trusted: true}
	c.SetMembers(at(0), append(members(2), vip))
	c.CheckOK(1, master(1, 100, "n2"), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 100), at(1), at(3), "10.0.0.2")
	c.CheckOK(9, master(1, 100, "n2"), at(1), at(4), "10.0.0.1")
	return c
}

// ownAddressDown has the master's own address (node 1) time out twice,
// down, and its second address (node 9) answer: it stands for the server.
func ownAddressDown(c *Core) {
	c.CheckFailed(1, errors.New("timeout"), true, at(100))
	c.CheckFailed(1, errors.New("timeout"), true, at(110))
	c.CheckOK(9, master(1, 120, "n2"), at(111), at(112), "10.0.0.1")
}
