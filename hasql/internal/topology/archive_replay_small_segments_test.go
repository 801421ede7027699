package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// A cluster made with small WAL segments (initdb --wal-segsize=1, 1 MiB:
// the smallest allowed, chosen for archiving under a low write rate). y,
// which once followed a promotion (it holds timeline 2's history file),
// streamed the master's timeline-2 WAL to 0x2000000; the master died and
// y's walreceiver stopped there. y replays on from the archive
// (restore_command): ten whole 1 MiB segments, each ended by
// archive_timeout's switch record, to 0x2A00000, a segment end. S,
// promoted apart on timeline 2 too, is at 0x2500000: five segments behind
// what y holds. y's replay is ten segments, not less than one, past where
// streaming stopped: it is no switch's padding, and S must stay proven
// behind y, not elected. The checker reads the server's segment size.
func TestArchiveReplayOfSeveralSmallSegmentsKeepsTheProof(t *testing.T) {
	for _, tc := range []struct {
		name   string
		replay checker.LSN
	}{
		{"control, replay just short of the segment end", 0x2A00000 - 0x18},
		{"replay on the segment end (archive_timeout's switch record)", 0x2A00000},
	} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
		sS, sY := t0.Add(-time.Hour), t0.Add(-3*time.Hour)
		y := noRecvReplica(tc.replay, sY)
		y.ReceiveLSN, y.HistoryTimeline, y.WalSegmentSize = 0x2000000, 2, 1<<20
		c.CheckOK(1, rcWritable("main", 2, 0x2500000, sS), at(1), at(2), "10.0.0.1")
		c.CheckOK(2, y, at(3), at(4), "10.0.0.2")
		for i := range 5 {
			ms := 100 + 500*i
			c.CheckOK(1, rcWritable("main", 2, checker.LSN(0x2500000+0x100*i), sS), at(ms), at(ms+1), "10.0.0.1")
			c.CheckOK(2, y, at(ms+2), at(ms+3), "10.0.0.2")
		}
		e, x := c.Elected(), c.Node(1)
		if e.Master != nil {
			t.Errorf("%s: S (timeline 2 at 0x2500000) elected (role %s, stale %v) although vouched replica y replayed timeline-2 WAL to %#x (streaming stopped at 0x2000000, ten 1 MiB segments before)",
				tc.name, x.Role, x.Stale, uint64(tc.replay))
		}
	}
}
