package topology

import (
	"math/rand"
	"testing"
)

// The model against PostgreSQL.
//
// walreceiver.c: after IDENTIFY_SYSTEM (primaryTLI: the upstream's own
// timeline, its replay timeline on a cascading standby) it errors out when
// primaryTLI < startpointTLI, and otherwise calls
// WalRcvFetchTimeLineHistoryFiles(startpointTLI, primaryTLI), which asks
// for the files of the timelines startpointTLI..primaryTLI only. A history
// file the upstream holds of a timeline newer than its own (a left-behind
// replica's, fetched from a server it could not follow) is never passed
// on: a replica that cascades from a left-behind replica does not hold it,
// and, promoted, picks timeline 2 (findNewestTimeLine from its recovery
// target, 1, plus one) although another server already took that number:
// the same-number collisions the core has been wrong about before.
func TestModelWalreceiverFetchesOnlyUpToTheUpstreamsTimeline(t *testing.T) {
	md := newModel(rand.New(rand.NewSource(1)), nil, 2, 0, false)
	u, s := md.servers[1], md.servers[2]
	u.files = 3 // left behind on timeline 1, fetched 2 and 3 from elsewhere
	s.upstream = u.idx
	md.replicate()
	if s.files > u.tl() {
		t.Errorf("s cascades from u (timeline %d): the model gave it history file %d; PostgreSQL fetches only up to the upstream's timeline", u.tl(), s.files)
	}
	s.upstream = -1
	md.promote(s)
	if s.tl() != 2 {
		t.Errorf("promoted: the model picked timeline %d; PostgreSQL picks findNewestTimeLine(1)+1 = 2 (no 00000002.history in its pg_wal)", s.tl())
	}
}
