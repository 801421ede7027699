package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// TestSwitchReplayedWithNoWalreceiverDoesNotKeepTheMasterStale with a
// cluster made with 64 MiB WAL segments (initdb --wal-segsize=64, common
// for write-heavy clusters): the master switched WAL at 0x400094B and
// stalled before writing the padding to the segment's end, 0x8000000; its
// replica replayed the switch record and reports that end, its
// walreceiver timed out. The master comes back and writes the padding:
// the replica holds nothing the master did not write, and the master must
// be elected, not kept stale for good. The checker reads the server's
// segment size.
func TestSwitchReplayedInALargeSegmentDoesNotKeepTheMasterStale(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
	sW, sY := t0.Add(-time.Hour), t0.Add(-3*time.Hour)
	const switchEnd, segEnd = checker.LSN(0x400094B), checker.LSN(0x8000000)
	y := noRecvReplica(segEnd, sY)
	y.ReceiveLSN, y.HistoryTimeline, y.WalSegmentSize = switchEnd, 2, 64<<20
	c.CheckOK(2, y, at(1), at(2), "10.0.0.2")
	c.CheckOK(1, rcWritable("w", 2, switchEnd, sW), at(10), at(11), "10.0.0.1")
	for i := range 5 {
		ms := 100 + 100*i
		c.CheckOK(2, y, at(ms), at(ms+1), "10.0.0.2")
		c.CheckOK(1, rcWritable("w", 2, segEnd+checker.LSN(0x100*i), sW), at(ms+10), at(ms+11), "10.0.0.1")
	}
	e, x := c.Elected(), c.Node(1)
	if e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("w, past the end of the 64 MiB segment whose switch record y replayed (y received to %s, replayed to %s): master %v, w %s stale %v behind %q",
			switchEnd, segEnd, e.Master != nil, x.Role, x.Stale, x.StaleBehind)
	}
}

// The same race with the replica streaming: read between the master's
// switch (its write position 0x400094B, the padding to 0x8000000 not yet
// written) and the padding, the replica reports the switch record received
// and the segment's end replayed; a moment later it has received the
// padding and the master writes on. Nothing is missing on the master: it
// must be elected.
func TestSwitchReplayedInALargeSegmentByAStreamingReplicaDoesNotKeepTheMasterStale(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
	sW, sY := t0.Add(-time.Hour), t0.Add(-3*time.Hour)
	const switchEnd, segEnd = checker.LSN(0x400094B), checker.LSN(0x8000000)
	row := checker.Replica{ApplicationName: "y", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "async"}
	y := rcReplica("y", 2, segEnd, sY, "10.0.0.1")
	y.ReceiveLSN, y.WalSegmentSize = switchEnd, 64<<20
	c.CheckOK(2, y, at(1), at(2), "10.0.0.2")
	c.CheckOK(1, rcWritable("w", 2, switchEnd, sW, row), at(10), at(11), "10.0.0.1")
	for i := range 5 {
		ms := 100 + 100*i
		pos := segEnd + checker.LSN(0x100*i)
		c.CheckOK(2, rcReplica("y", 2, pos, sY, "10.0.0.1"), at(ms), at(ms+1), "10.0.0.2")
		c.CheckOK(1, rcWritable("w", 2, pos+0x80, sW, row), at(ms+10), at(ms+11), "10.0.0.1")
	}
	e, x := c.Elected(), c.Node(1)
	if e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("w, streaming to y and past the end of the 64 MiB segment whose switch record y replayed early (y received to %s, replayed to %s): master %v, w %s stale %v behind %q",
			switchEnd, segEnd, e.Master != nil, x.Role, x.Stale, x.StaleBehind)
	}
}
