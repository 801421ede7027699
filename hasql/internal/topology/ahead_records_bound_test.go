package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// A vouched node (a host of the connection string) that is writable on the
// cluster's timeline behind a replica is proven stale, and the replica
// keeps a record of it: the node, its timeline and its server (system
// identifier and start time). The record of a server that has gone from
// the node's address is kept too (a name may move back). A rogue at that
// address that shows a new start time at every check (it reconnects, or
// says so) must not add one record per check to the replica for as long
// as the replica stays (every derivation walks the list): at most 8 of a
// node, and the node stays proven behind.
func TestProofsOfANodeRestartingAtEveryCheckAreBounded(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	c.CheckOK(1, master(1, 300, "n2"), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 300), at(1), at(3), "10.0.0.2")
	c.TakeReady()
	// The master dies; the replica stays in recovery, at 300.
	c.CheckFailed(1, errConnRefused, false, at(5))
	c.CheckOK(2, replica("n2", 1, 1, 300), at(6), at(7), "10.0.0.2")
	c.TakeReady()
	const rounds = 2000
	warned := 0
	for i := 0; i < rounds; i++ {
		ms := 10 + 10*i
		r := checker.Result{Timeline: 1, LSN: 100, SystemID: sys, StartTime: t0.Add(time.Duration(i+100) * time.Hour), Name: "rogue"}
		c.CheckOK(3, r, at(ms), at(ms+1), "10.0.0.3")
		if i%50 == 0 {
			c.CheckFailed(1, errConnRefused, false, at(ms+2))
			c.CheckOK(2, replica("n2", 1, 1, 300), at(ms+2), at(ms+4), "10.0.0.2")
		}
		if logged(c.TakeReady(), "another server answers at the address") {
			warned++
		}
	}
	t.Logf("%d checks of the rogue wrote %d warnings that another server answers at its address", rounds, warned)
	x3 := c.Node(3)
	t.Logf("node 3: stale %v, role %s, waiting %q, detached %q, split %v; node 2 keeps %d records", x3.Stale, x3.Role, x3.Waiting, x3.Detached, c.Elected().SplitBrain, len(c.Node(2).ahead))
	if n := len(c.Node(2).ahead); n > 64 {
		t.Errorf("the replica keeps %d records of the rogue's servers after %d checks: one per check, unbounded", n, rounds)
	}
}

var errConnRefused = errors.New("connection refused")
