package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// The master switched WAL (pg_switch_wal, archive_timeout, the end of a
// base backup) and stalled before its write position reached the segment's
// end (its padding not written: a disk that hangs, a paused VM). Its
// replica replayed the switch record, so it reports the segment's end as
// its replay position, and its walreceiver timed out; it holds a history
// file, as every replica that once followed a promotion does. The master
// comes back: its first check shows the switch record's end, below the
// replica's replay position, then the segment's end. The replica holds
// nothing the master did not write: the master must be elected, not kept
// stale for good behind the replica's padding (the proof is against the
// same server, which nothing else ends).
func TestSwitchReplayedWithNoWalreceiverDoesNotKeepTheMasterStale(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
	sW, sY := t0.Add(-time.Hour), t0.Add(-3*time.Hour)
	const switchEnd, segEnd = checker.LSN(0x100094B), checker.LSN(0x2000000)
	y := noRecvReplica(segEnd, sY)
	y.ReceiveLSN, y.HistoryTimeline = switchEnd, 2
	c.CheckOK(2, y, at(1), at(2), "10.0.0.2")
	c.CheckOK(1, rcWritable("w", 2, switchEnd, sW), at(10), at(11), "10.0.0.1")
	for i := range 5 {
		ms := 100 + 100*i
		c.CheckOK(2, y, at(ms), at(ms+1), "10.0.0.2")
		c.CheckOK(1, rcWritable("w", 2, segEnd, sW), at(ms+10), at(ms+11), "10.0.0.1")
	}
	e, x := c.Elected(), c.Node(1)
	if e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("w, at the end of the segment whose switch record y replayed (y received to %s, replayed to %s): master %v, w %s stale %v behind %q",
			switchEnd, segEnd, e.Master != nil, x.Role, x.Stale, x.StaleBehind)
	}
}
