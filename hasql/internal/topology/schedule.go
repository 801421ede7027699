package topology

import "time"

// UntilTick returns how long a node whose check just ended waits before its
// next check at interval d, since being how long ago the checks' clock
// started (the Manager's start): until the next multiple of d since then, so
// that every node is checked at the same moments. Checks in step are cheaper
// (one wake-up of the process serves them all instead of one each, which is
// most of their cost with many nodes) and compare like with like (the
// master's position and a replica's are read together, so lag is not
// skewed by up to an interval).
//
// The next check comes at the next tick however close it is: a check that
// began at a tick and took less than d is followed by one d after it began.
// What a check read stands in the view until the next one, and
// WantReplicas lets a check reuse a writable node's walsenders on the
// promise that the next one comes within d; a tick skipped after a slow
// check would leave a replica claimed sync, or serving reads, for up to 2d
// after it stopped.
func UntilTick(since, d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - since%d
}
