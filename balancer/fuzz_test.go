package balancer_test

import (
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgxha/pgxha/balancer"
)

// fuzzWeights are the weights a fuzz input can give a node, including values
// outside the documented range.
var fuzzWeights = []float64{
	1, 0.5, 0.25, 0.999, 2, 3, 100, 1e-300, 1e300, math.MaxFloat64,
	math.SmallestNonzeroFloat64, 0, -1, math.NaN(), math.Inf(1), math.Inf(-1),
}

// FuzzPick builds every policy over a cluster described by data, three bytes
// per node (weight, latency, connections in use; lag derives from them), and
// checks that Pick stays in range and that First, LeastLag and single-node
// sets pick as documented.
func FuzzPick(f *testing.F) {
	f.Add([]byte{0, 0, 0})
	f.Add([]byte{0, 1, 2, 1, 2, 3, 2, 3, 4})
	f.Add([]byte{7, 0, 0, 8, 255, 255, 12, 1, 0, 13, 0, 1})
	f.Add([]byte{9, 9, 9, 10, 10, 10, 14, 14, 14, 15, 15, 15, 11, 11, 11})
	f.Fuzz(func(t *testing.T, data []byte) {
		n := min(len(data)/3, 64)
		if n == 0 {
			return
		}
		nodes := make([]balancer.Node, n)
		for i := range nodes {
			b := data[3*i : 3*i+3]
			var inUse *atomic.Int64
			if b[2] != 255 {
				inUse = new(atomic.Int64)
				inUse.Store(int64(b[2]))
			}
			nodes[i] = balancer.Node{
				Index:   (i*37 + int(b[1])) % 251, // not in slice order
				Weight:  fuzzWeights[int(b[0])%len(fuzzWeights)],
				Latency: time.Duration(b[1]) * time.Duration(b[1]) * time.Microsecond,
				InUse:   inUse,
			}
			if b[2]%4 != 3 {
				nodes[i].LagKnown = true
				nodes[i].LagBytes = (int64(b[1]) - 8) << 16 // some negative
				nodes[i].Lag = time.Duration(int(b[0])-2) * 20 * time.Millisecond
			}
		}
		qualifies := leastLagQualifying(nodes, balancer.DefaultLagToleranceBytes, balancer.DefaultLagTolerance)
		lowest := 0
		for i := range nodes {
			if nodes[i].Index < nodes[lowest].Index {
				lowest = i
			}
		}
		for _, b := range policies {
			p := b.Build(nodes)
			for range 2*n + 8 {
				i := p.Pick()
				if i < 0 || i >= n {
					t.Fatalf("%s: Pick() = %d, want an index in [0, %d)", b.Name(), i, n)
				}
				if n == 1 && i != 0 {
					t.Fatalf("%s: Pick() = %d on a single node, want 0", b.Name(), i)
				}
				if b.Name() == "first" && i != lowest {
					t.Fatalf("first: Pick() = %d (Index %d), want %d (Index %d)", i, nodes[i].Index, lowest, nodes[lowest].Index)
				}
				if b.Name() == "least_lag" && !qualifies[i] {
					t.Fatalf("least_lag: Pick() = %d (lag %d bytes, %s, known %v), which is not within the tolerance of the least lag; qualifying %v",
						i, nodes[i].LagBytes, nodes[i].Lag, nodes[i].LagKnown, qualifies)
				}
			}
		}
	})
}

// leastLagQualifying returns, per node, whether least_lag may pick it: its
// lag is known, its byte lag within tolBytes of the smallest, and its time
// lag within tolTime of the smallest among the nodes that passed the bytes
// test (negative lags counting as 0); or no node's lag is known. It is
// written apart from the policy, as the documentation states the rule.
func leastLagQualifying(nodes []balancer.Node, tolBytes int64, tolTime time.Duration) []bool {
	out := make([]bool, len(nodes))
	minBytes := int64(math.MaxInt64)
	known := false
	for _, n := range nodes {
		if n.LagKnown {
			known = true
			minBytes = min(minBytes, max(n.LagBytes, 0))
		}
	}
	if !known {
		for i := range out {
			out[i] = true
		}
		return out
	}
	minTime := time.Duration(math.MaxInt64)
	for i, n := range nodes {
		out[i] = n.LagKnown && max(n.LagBytes, 0) <= minBytes+tolBytes
		if out[i] {
			minTime = min(minTime, max(n.Lag, 0))
		}
	}
	for i, n := range nodes {
		out[i] = out[i] && max(n.Lag, 0) <= minTime+tolTime
	}
	return out
}
