package hasql_test

import "testing"

// TestAfterIgnoresPositionsOfAnotherTimelineSeenByOtherReads: as in
// TestAfterProbeComparesTimelines, the Manager's view still shows the old
// master n1, cut off, its next check not due; n2 was promoted without the
// token's write and n3, repointed to it, replays the new timeline past the
// token's position. Before the read after the token, the same Manager
// learned n3's position some other way: a read with a plain MinLSN, or
// WaitReplayed, asked n3 how far it replayed. That position is of another
// timeline than the one the token was resolved against: the read after the
// token must still not be served by n3 without the write.
func TestAfterIgnoresPositionsOfAnotherTimelineSeenByOtherReads(t *testing.T) {
	for _, how := range []string{"MinLSN", "WaitReplayed"} {
		t.Run(how, func(t *testing.T) { afterProbeOnAnotherTimeline(t, how, "hasql_check_interval", "2m") })
	}
}
