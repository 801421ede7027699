package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// A healthy replica far away (150ms each way) whose check reads its replay
// position around when the master's check shows a commit it has not
// replayed yet: its lag is the time from the master's sample to when its
// own position was read (the middle of its check, as the master's sample
// is the middle of the master's), not to when the answer arrived. Counting
// to the answer added the replica's one-way latency to its lag, and a
// lag limit below that kept every read off it.
func TestLagOfAFarReplicaCountsToItsReading(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	c.CheckOK(1, master(1, 1000, "n2"), at(0), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 1000), at(0), at(300), "10.0.0.2")
	c.CheckOK(1, master(1, 1000, "n2"), at(500), at(502), "10.0.0.1")
	if x := c.Node(2); !x.LagKnown || x.LagBytes != 0 {
		t.Fatalf("setup: n2 %s lag %d bytes known %v", x.Role, x.LagBytes, x.LagKnown)
	}
	// The master, checked at 1.14s, has written up to 2000; n2's position,
	// read at about 1.15s (its check ran from 1s to 1.3s), is 1990.
	c.CheckOK(1, master(1, 2000, "n2"), at(1140), at(1142), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, checker.LSN(1990)), at(1000), at(1300), "10.0.0.2")
	x := c.Node(2)
	if !x.Role.IsReplica() || !x.LagKnown || x.LagBytes != 10 {
		t.Fatalf("n2 %s lag %d bytes known %v; want a replica 10 bytes behind with its lag known", x.Role, x.LagBytes, x.LagKnown)
	}
	if x.Lag > 50*time.Millisecond {
		t.Fatalf("n2, read about 9ms after the master's sample, lag %v: its latency counted as lag", x.Lag)
	}
}
