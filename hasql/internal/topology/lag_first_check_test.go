package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// A replica whose replay stands still at 0/3E8 is checked for the first
// time from 0.9s to 2.9s (a first check always opens its connection: TCP,
// TLS, auth and the server's identity go before the position is read),
// while the master, checked every 2s, showed 0/7D0 at its check at 1s.
// The core knows nothing of the replica's usual latency: the latest its
// position can have been read is its answer, 2.9s, when it lacked what
// the master had 1.9s before. Counting to the middle of the check (1.9s)
// takes the lag for 0.9s, under a 1s lag limit.
func TestLagOfAFirstCheckCountsToTheLatestItsPositionCanHaveBeenRead(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(-6000), members(2))
	const paused = checker.LSN(1000)
	for ms := -6000; ms < 0; ms += 2000 {
		c.CheckOK(1, master(1, paused, "n2", "n3"), at(ms), at(ms+2), "10.0.0.1")
		c.CheckOK(2, replica("n2", 1, 1, paused), at(ms+100), at(ms+110), "10.0.0.2")
	}
	// n3 joins the set (discovery reports it) and is checked for the
	// first time.
	c.SetMembers(at(500), members(3))
	c.CheckOK(1, master(1, 2000, "n2", "n3"), at(1000), at(1002), "10.0.0.1")
	c.CheckOK(3, replica("n3", 1, 1, paused), at(900), at(2900), "10.0.0.3")
	x := c.Node(3)
	latest := at(2900).Sub(at(1001))
	t.Logf("n3 %s: lag %d bytes, %v known %v; read at 2.9s at the latest: %v behind then", x.Role, x.LagBytes, x.Lag, x.LagKnown, latest)
	if !x.Role.IsReplica() || !x.LagKnown || x.LagBytes == 0 {
		t.Fatalf("setup: n3 %s lag %d bytes known %v", x.Role, x.LagBytes, x.LagKnown)
	}
	if x.Lag < time.Second {
		t.Fatalf("n3 lag %v on its first check (%v long, its usual latency unknown): below 1s, while its position may have been read at 2.9s, %v after the master's sample it lacks",
			x.Lag, x.Latency, latest)
	}
}

// The replica of TestLagOfASlowCheckCountsToTheLatestItsPositionCanHaveBeenRead
// (150ms away, its checks take 300ms), whose first check took 2s: it
// opened its connection. Its checks since took 300ms; the average of its
// latencies still carries the first one's 2s, and a later check that took
// 2s (it opened a connection again) is taken to have read its position
// half that average before its answer, not 150ms.
func TestLagOfASlowCheckCountsToTheLatestAfterASlowFirstCheck(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(-8000), members(2))
	const paused = checker.LSN(1000)
	for ms := -8000; ms < 0; ms += 2000 {
		c.CheckOK(1, master(1, paused, "n2"), at(ms), at(ms+2), "10.0.0.1")
		end := ms + 400
		if ms == -8000 {
			end = ms + 2100 // the first check opens the connection
		}
		c.CheckOK(2, replica("n2", 1, 1, paused), at(ms+100), at(end), "10.0.0.2")
	}
	c.CheckOK(1, master(1, 2000, "n2"), at(1000), at(1002), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, paused), at(900), at(2900), "10.0.0.2")
	x := c.Node(2)
	const usualWayBack = 150 * time.Millisecond
	latest := at(2900).Add(-usualWayBack).Sub(at(1001))
	t.Logf("n2 %s: lag %d bytes, %v known %v; latency average before the check %v; read at 2.9s less %v at the latest: %v behind then",
		x.Role, x.LagBytes, x.Lag, x.LagKnown, (x.EWMA*8-x.Latency)/7, usualWayBack, latest)
	if !x.Role.IsReplica() || !x.LagKnown || x.LagBytes == 0 {
		t.Fatalf("setup: n2 %s lag %d bytes known %v", x.Role, x.LagBytes, x.LagKnown)
	}
	if x.Lag < latest-50*time.Millisecond || x.Lag < time.Second {
		t.Fatalf("n2 lag %v, below the %v from the master's sample to the latest its position can have been read (its check took %v; its first check 2s, the three since 300ms)",
			x.Lag, latest, x.Latency)
	}
}

// Node 2's address reached a replica in a far data centre (its checks took
// 2s) and now reaches another server, 150ms away (a virtual address moved
// onto a standby near by). The first check of the new server, from 0.9s to
// 2.9s, opened its connection: its position was read near 2.9s, 1.9s after
// the master's sample it lacks (0/7D0 at 1s). The latencies the core
// averaged are the far server's: they say nothing of this one's way back,
// and the lag must not be taken from the middle of the check (0.9s, under
// a 1s lag limit).
func TestLagOfTheFirstCheckOfAnotherServerAtTheAddressCountsToTheLatest(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(-8000), members(2))
	const paused = checker.LSN(1000)
	for ms := -8000; ms < 0; ms += 2000 {
		c.CheckOK(1, master(1, paused, "n2"), at(ms), at(ms+2), "10.0.0.1")
		c.CheckOK(2, replica("n2", 1, 1, paused), at(ms+100), at(ms+2100), "10.0.0.2")
	}
	c.CheckOK(1, master(1, 2000, "n2"), at(1000), at(1002), "10.0.0.1")
	r := replica("n2", 1, 1, paused)
	r.StartTime = r.StartTime.Add(time.Hour) // another server
	c.CheckOK(2, r, at(900), at(2900), "10.0.0.2")
	x := c.Node(2)
	latest := at(2900).Sub(at(1001))
	t.Logf("n2 %s: lag %d bytes, %v known %v; read at 2.9s at the latest: %v behind then", x.Role, x.LagBytes, x.Lag, x.LagKnown, latest)
	if !x.Role.IsReplica() || !x.LagKnown || x.LagBytes == 0 {
		t.Fatalf("setup: n2 %s lag %d bytes known %v", x.Role, x.LagBytes, x.LagKnown)
	}
	if x.Lag < time.Second {
		t.Fatalf("n2 lag %v on the first check of the server now at its address (%v long; the latencies averaged are of the server before): below 1s, while its position may have been read at 2.9s, %v after the master's sample it lacks",
			x.Lag, x.Latency, latest)
	}
}
