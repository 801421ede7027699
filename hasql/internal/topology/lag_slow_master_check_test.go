package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// The master, checked every second (its checks take 2ms), writes steadily;
// n2 streams and replays within a millisecond of it (replay_lag 1ms): each
// master check's row for n2 shows a replay position a few bytes below the
// master's, both read by the one statement of that check (checkSQL reads
// pg_current_wal_lsn() and pg_stat_replication together). One master check
// takes 400ms (the server was slow to answer, or the network). What it
// proves of n2 is the same as at every other check: at the moment of that
// statement n2 lacked a few bytes the master had at that moment, a lag of
// about replay_lag. Taking the master's position for read at the middle
// of the check and the row for read at its answer less half the shortest
// check makes n2 ~200ms behind, and out of reads under a 100ms lag limit,
// at every slow check of the master.
func TestLagOfARowReadWithTheMastersPositionNotGrownByASlowMasterCheck(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	row := func(lsn checker.LSN) checker.Result {
		m := master(1, lsn, "n2")
		m.Replicas[0].ReplayLSN = lsn - 10
		m.Replicas[0].HasReplayLag, m.Replicas[0].ReplayLag = true, time.Millisecond
		return m
	}
	lsn := checker.LSN(100000)
	for ms := 0; ms < 5000; ms += 1000 {
		c.CheckOK(2, replica("n2", 1, 1, lsn-500), at(ms+500), at(ms+502), "10.0.0.2")
		lsn += 1000
		c.CheckOK(1, row(lsn), at(ms+1000), at(ms+1002), "10.0.0.1")
	}
	x := c.Node(2)
	if !x.Role.IsReplica() || !x.LagKnown || x.Lag > 50*time.Millisecond {
		t.Fatalf("setup: n2 %s lag %v known %v", x.Role, x.Lag, x.LagKnown)
	}
	c.CheckOK(2, replica("n2", 1, 1, lsn-500), at(5500), at(5502), "10.0.0.2")
	lsn += 1000
	c.CheckOK(1, row(lsn), at(6000), at(6400), "10.0.0.1")
	x = c.Node(2)
	if x.Lag > 100*time.Millisecond {
		t.Fatalf("a master check took 400ms; its row shows n2 10 bytes below the position the same statement read (replay_lag 1ms): n2 lag %v (%d bytes); want about its replay_lag, not a share of the master check's latency",
			x.Lag, x.LagBytes)
	}
}
