package hasql

import "testing"

// BenchmarkInUseCounter times what every acquire and release does to its
// node's in-use counter (acquireFast's add and test, TraceRelease's
// subtract): the part of pgxha's overhead in BenchmarkAcquireVersus that
// bounds an acquire in a full pool (see node.acquire) and feeds the
// load-aware balancers.
func BenchmarkInUseCounter(b *testing.B) {
	n := &node{maxConns: 8}
	full := 0
	for b.Loop() {
		if n.inUse.Add(1) > n.maxConns {
			full++
		}
		n.inUse.Add(-1)
	}
	if full != 0 || n.inUse.Load() != 0 {
		b.Fatalf("in use %d after %d full", n.inUse.Load(), full)
	}
}
