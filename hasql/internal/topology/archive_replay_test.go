package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// A replica's replay position past its received one on a segment boundary
// is taken for a switch record's padding only while it can be one
// (replayedContent). pg_last_wal_receive_lsn() stays at the last position
// the walreceiver flushed once it stops (its upstream dead), while the
// replica replays on from its archive (restore_command); with
// archive_timeout on the dead master every archived segment ends with a
// switch record, so its replay stops exactly at a segment's end. y holds
// the dead master's branch of timeline 2 to 0x5000000; S, promoted apart
// on timeline 2 too, is at 0x4800000: S stays proven behind y, also when
// y's replay stands on the boundary.
func TestArchiveReplayOnASegmentEndKeepsTheProof(t *testing.T) {
	for _, tc := range []struct {
		name   string
		replay checker.LSN
	}{
		{"control, replay just short of the boundary", 0x5000000 - 0x18},
		{"replay on the segment boundary (switch record replayed from archive)", 0x5000000},
	} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
		sS, sY := t0.Add(-time.Hour), t0.Add(-3*time.Hour)
		y := noRecvReplica(tc.replay, sY)
		y.ReceiveLSN = 0x2000000 // where streaming from the dead master stopped
		c.CheckOK(1, rcWritable("main", 2, 0x4800000, sS), at(1), at(2), "10.0.0.1")
		c.CheckOK(2, y, at(3), at(4), "10.0.0.2")
		for i := range 5 {
			ms := 100 + 500*i
			c.CheckOK(1, rcWritable("main", 2, checker.LSN(0x4800000+0x100*i), sS), at(ms), at(ms+1), "10.0.0.1")
			c.CheckOK(2, y, at(ms+2), at(ms+3), "10.0.0.2")
		}
		e, x := c.Elected(), c.Node(1)
		t.Logf("%s: master %v, n1 %s stale %v behind %q", tc.name, e.Master != nil, x.Role, x.Stale, x.StaleBehind)
		if e.Master != nil {
			t.Errorf("%s: S (timeline 2 at 0x4800000) elected although vouched replica y replayed timeline-2 WAL to %#x", tc.name, uint64(tc.replay))
		}
	}
}
