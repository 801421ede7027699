package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// Streaming from the dead master stopped exactly at a segment boundary
// (pg_last_wal_receive_lsn() 0x2000000: the whole segment before it
// received, nothing of the next one); the replica then replays the next
// segment from its archive, which ends with a switch record
// (archive_timeout), so its replay stands at 0x3000000, the end of a
// segment the walreceiver never received a byte of. No switch record of
// the received WAL can extend past 0x2000000: the replay is the archive's
// content, not padding. S, promoted apart on timeline 2 too, is at
// 0x2800000: S stays proven behind y whether or not the checker read y's
// segment size (the fallback, size unknown, keeps this proof).
func TestArchiveReplayOfTheSegmentAfterTheReceivedBoundaryKeepsTheProof(t *testing.T) {
	for _, tc := range []struct {
		name string
		seg  int64
	}{
		{"segment size unknown (fallback)", 0},
		{"segment size known, 16 MiB", 16 << 20},
	} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true)})
		sS, sY := t0.Add(-time.Hour), t0.Add(-3*time.Hour)
		y := noRecvReplica(0x3000000, sY)
		y.ReceiveLSN, y.WalSegmentSize = 0x2000000, tc.seg
		c.CheckOK(1, rcWritable("main", 2, 0x2800000, sS), at(1), at(2), "10.0.0.1")
		c.CheckOK(2, y, at(3), at(4), "10.0.0.2")
		for i := range 5 {
			ms := 100 + 500*i
			c.CheckOK(1, rcWritable("main", 2, checker.LSN(0x2800000+0x100*i), sS), at(ms), at(ms+1), "10.0.0.1")
			c.CheckOK(2, y, at(ms+2), at(ms+3), "10.0.0.2")
		}
		e, x := c.Elected(), c.Node(1)
		if e.Master != nil {
			t.Errorf("%s: S (timeline 2 at 0x2800000) elected although vouched replica y, received to the boundary 0x2000000, replayed timeline-2 WAL from its archive to 0x3000000: n1 %s stale %v behind %q",
				tc.name, x.Role, x.Stale, x.StaleBehind)
		}
	}
}
