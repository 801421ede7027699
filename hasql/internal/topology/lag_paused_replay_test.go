package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// A replica whose replay is paused (no replay_lag row value: the walsender
// clears it while idle and measures nothing while replay stands still)
// misses WAL the master wrote. The master is checked every 500ms and has
// shown the WAL since its check at 1.5s. Every later measure of the
// replica's lag must be at least the time from when the master was seen
// with WAL the replica lacks (the middle of the master's check) to when the
// replica's position was read (no earlier than the middle of its check):
// anything less is below what the Manager itself has seen, and 0 claims
// the replica is in step.
func TestPausedReplicaLagNotZeroWhileMasterShowsPendingWAL(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	const paused = checker.LSN(1000)
	for ms := 0; ms < 1500; ms += 500 {
		c.CheckOK(1, master(1, paused, "n2"), at(ms), at(ms+2), "10.0.0.1")
		c.CheckOK(2, replica("n2", 1, 1, paused), at(ms+10), at(ms+12), "10.0.0.2")
	}
	if x := c.Node(2); x.Role != RoleAsyncReplica || !x.LagKnown || x.LagBytes != 0 {
		t.Fatalf("setup: n2 %s lag %d bytes known %v", x.Role, x.LagBytes, x.LagKnown)
	}
	// A write at ~1.2s; replay on n2 stays paused at 0/3E8.
	firstSeen := at(1501) // the sample the core keeps: the middle of the master's check
	bad := 0
	for ms := 1500; ms <= 3000; ms += 500 {
		c.CheckOK(1, master(1, 2000, "n2"), at(ms), at(ms+2), "10.0.0.1")
		if x, proven := c.Node(2), at(ms+2).Sub(firstSeen); x.Role.IsReplica() && x.LagKnown && x.LagBytes > 0 && proven > 10*time.Millisecond && x.Lag < proven {
			t.Logf("t=%dms (the master's check): n2 lag %d bytes, %v known, below the %v proven", ms+2, x.LagBytes, x.Lag, proven)
			bad++
		}
		c.CheckOK(2, replica("n2", 1, 1, paused), at(ms+10), at(ms+400), "10.0.0.2")
		x := c.Node(2)
		proven := at(ms + 205).Sub(firstSeen) // read in the middle of its check, 10ms to 400ms
		t.Logf("t=%dms: n2 %s lag %d bytes, %v known %v (the master has had WAL n2 lacks for at least %v)",
			ms+400, x.Role, x.LagBytes, x.Lag, x.LagKnown, proven)
		if x.Role.IsReplica() && x.LagKnown && x.LagBytes > 0 && proven > 10*time.Millisecond && x.Lag < proven {
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d measures of a paused replica's lag were below the time since the master was seen with WAL it lacks", bad)
	}
}
