package topology

import (
	"errors"
	"testing"

	"github.com/pgxha/pgxha/checker"
)

// With no master known (the Manager lost its way to it: a partition between
// the two only, the master writing on), a replica kept the lag measured at
// the master's last check: 0 and known, while its own checks showed it
// paused with WAL received and not replayed. Unknown lag must not read as 0:
// with no master to measure against, it is unknown.
func TestLagUnknownWithNoMaster(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	c.CheckOK(1, master(1, 1000, "n2", "n3"), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 1000), at(3), at(4), "10.0.0.2")
	r3 := replica("n3", 1, 1, 1000)
	r3.StartTime = at(-7000) // another server than n2 (replica() gives names of one length one start time)
	c.CheckOK(3, r3, at(3), at(4), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(3); !x.Role.IsReplica() || !x.LagKnown || x.LagBytes != 0 {
		t.Fatalf("n3 in step: role %s lag %d known %v", x.Role, x.LagBytes, x.LagKnown)
	}
	// The master's checks fail from now on (refused: down to the Manager).
	c.CheckFailed(1, errors.New("connection refused"), false, at(100))
	// n3 paused: it receives and does not replay, for a minute.
	for i := 1; i <= 60; i++ {
		r := replica("n3", 1, 1, 1000)
		r.StartTime = at(-7000)
		r.ReceiveLSN = checker.LSN(1000 + 1000*i)
		r.ReplayPaused = true
		r.ServerTime = at(200 + 1000*i)
		r.ReplayTime = at(0)
		c.CheckOK(3, r, at(100+1000*i), at(101+1000*i), "10.0.0.3")
	}
	c.TakeReady()
	x := c.Node(3)
	if x.Role.IsReplica() && x.LagKnown {
		t.Fatalf("n3, paused for a minute with 60000 bytes received and not replayed, no master known: role %s, lag %d bytes %s, known %v",
			x.Role, x.LagBytes, x.Lag, x.LagKnown)
	}
}
