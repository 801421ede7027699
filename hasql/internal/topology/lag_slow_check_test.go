package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// A replica 150ms away (its checks take 300ms) whose replay stands still
// at 0/3E8, while the master, checked every 2s, showed 0/7D0 at its check
// at 1s. One check of the replica takes 2s, from 0.9s to 2.9s: its
// connection was opened afresh (the shell's check begins before it dials,
// retries once on a connection the server closed, and a new connection
// reads the server's identity before the check query: TCP, TLS, auth and
// a query go before the position is read), so its position was read near
// the end, not the middle.
// Its position was read at 2.75s at the latest (one usual one-way trip
// before its answer came), when it lacked what the master had 1.75s
// before. Where in a check that took seven times its usual latency the
// read was, the core cannot tell; counting to its middle (0.9s) takes the
// earliest guess, and a 1s lag limit reads from a replica that is 1.75s
// behind when the time went before the read. Counting to its answer less
// the usual way back keeps a lag limit on the safe side and still does not
// add a far replica's one-way latency to its lag.
func TestLagOfASlowCheckCountsToTheLatestItsPositionCanHaveBeenRead(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(-6000), members(2))
	const paused = checker.LSN(1000)
	for ms := -6000; ms < 0; ms += 2000 {
		c.CheckOK(1, master(1, paused, "n2"), at(ms), at(ms+2), "10.0.0.1")
		c.CheckOK(2, replica("n2", 1, 1, paused), at(ms+100), at(ms+400), "10.0.0.2")
	}
	c.CheckOK(1, master(1, 2000, "n2"), at(1000), at(1002), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, paused), at(900), at(2900), "10.0.0.2")
	x := c.Node(2)
	const usualWayBack = 150 * time.Millisecond // its usual checks take 300ms
	latest := at(2900).Add(-usualWayBack).Sub(at(1001))
	t.Logf("n2 %s: lag %d bytes, %v known %v; read at 2.9s less %v at the latest: %v behind then",
		x.Role, x.LagBytes, x.Lag, x.LagKnown, usualWayBack, latest)
	if !x.Role.IsReplica() || !x.LagKnown || x.LagBytes == 0 {
		t.Fatalf("setup: n2 %s lag %d bytes known %v", x.Role, x.LagBytes, x.LagKnown)
	}
	if x.Lag < latest-50*time.Millisecond {
		t.Fatalf("n2 lag %v, below the %v from the master's sample to the latest its position can have been read (its check took %v, usually 300ms)",
			x.Lag, latest, x.Latency)
	}
}
