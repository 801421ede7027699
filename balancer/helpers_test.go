package balancer_test

import (
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgxha/pgxha/balancer"
)

// spec describes one node of a test cluster. A zero weight means 1.
type spec struct {
	w   float64
	lat time.Duration
	use int64
	lag *lag // nil: lag unknown
}

// lag is a known replication lag.
type lag struct {
	bytes int64
	time  time.Duration
}

// makeNodes returns nodes in Index order, each with its own InUse counter.
func makeNodes(specs ...spec) []balancer.Node {
	nodes := make([]balancer.Node, len(specs))
	for i, s := range specs {
		w := s.w
		if w == 0 {
			w = 1
		}
		inUse := new(atomic.Int64)
		inUse.Store(s.use)
		nodes[i] = balancer.Node{
			Index:   i,
			Addr:    fmt.Sprintf("db%d.example.com:5432", i),
			Weight:  w,
			Latency: s.lat,
			InUse:   inUse,
		}
		if s.lag != nil {
			nodes[i].LagBytes, nodes[i].Lag, nodes[i].LagKnown = s.lag.bytes, s.lag.time, true
		}
	}
	return nodes
}

// weighted returns specs with the given weights.
func weighted(weights ...float64) []spec {
	specs := make([]spec, len(weights))
	for i, w := range weights {
		specs[i] = spec{w: w}
	}
	return specs
}

// uniform returns n specs of weight 1.
func uniform(n int) []spec { return make([]spec, n) }

// policies lists every builder of the package.
var policies = []balancer.Builder{
	balancer.RoundRobin(),
	balancer.Random(),
	balancer.WeightedRandom(),
	balancer.LeastBusy(),
	balancer.P2C(),
	balancer.First(),
	balancer.LeastLag(),
}

// countPicks calls p.Pick picks times and returns how often each of n
// indexes came back. It fails the test on an index out of range.
func countPicks(t testing.TB, p balancer.Picker, n, picks int) []int {
	t.Helper()
	counts := make([]int, n)
	for range picks {
		i := p.Pick()
		if i < 0 || i >= n {
			t.Fatalf("Pick() = %d, want an index in [0, %d)", i, n)
		}
		counts[i]++
	}
	return counts
}

// pickSequence returns the next picks indexes p returns, in order.
func pickSequence(t testing.TB, p balancer.Picker, n, picks int) []int {
	t.Helper()
	seq := make([]int, picks)
	for k := range seq {
		seq[k] = p.Pick()
		if seq[k] < 0 || seq[k] >= n {
			t.Fatalf("Pick() = %d, want an index in [0, %d)", seq[k], n)
		}
	}
	return seq
}

// checkShares fails the test if any node's share of picks is further than
// tol from want.
func checkShares(t testing.TB, counts []int, want []float64, tol float64) {
	t.Helper()
	total := 0
	for _, c := range counts {
		total += c
	}
	for i, c := range counts {
		got := float64(c) / float64(total)
		if math.Abs(got-want[i]) > tol+1e-12 {
			t.Errorf("node %d: share %.4f (%d of %d picks), want %.4f ± %.4f; all counts %v",
				i, got, c, total, want[i], tol, counts)
		}
	}
}

// checkSharesStat fails the test if any node's share of picks is further than
// six standard deviations of a binomial distribution from want. A correct
// implementation fails this about once in 10⁹ runs per node.
func checkSharesStat(t testing.TB, counts []int, want []float64) {
	t.Helper()
	total := 0
	for _, c := range counts {
		total += c
	}
	for i, c := range counts {
		got := float64(c) / float64(total)
		tol := 6 * math.Sqrt(want[i]*(1-want[i])/float64(total))
		if math.Abs(got-want[i]) > tol {
			t.Errorf("node %d: share %.4f (%d of %d picks), want %.4f ± %.4f; all counts %v",
				i, got, c, total, want[i], tol, counts)
		}
	}
}

// shares returns weights normalized to sum to 1.
func shares(weights ...float64) []float64 {
	sum := 0.0
	for _, w := range weights {
		sum += w
	}
	out := make([]float64, len(weights))
	for i, w := range weights {
		out[i] = w / sum
	}
	return out
}

// isRotation reports whether seq, of any length, is a stretch of the
// infinitely repeated cycle.
func isRotation(seq, cycle []int) bool {
	for off := range cycle {
		ok := true
		for k, v := range seq {
			if cycle[(off+k)%len(cycle)] != v {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func nan() float64 { return math.NaN() }
func inf() float64 { return math.Inf(1) }
