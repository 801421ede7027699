package balancer_test

import (
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/balancer"
)

func TestRoundRobinEven(t *testing.T) {
	for _, n := range []int{2, 3, 7, 64} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			p := balancer.RoundRobin().Build(makeNodes(uniform(n)...))
			rounds := 100_000 / n
			seq := pickSequence(t, p, n, rounds*n)
			counts := make([]int, n)
			for k, i := range seq {
				counts[i]++
				if k > 0 {
					require.Equal(t, (seq[k-1]+1)%n, i, "pick %d, after %d", k, seq[k-1])
				}
			}
			for i, c := range counts {
				assert.Equal(t, rounds, c, "picks of node %d in %d picks", i, rounds*n)
			}
		})
	}
}

// TestRoundRobinRandomStart checks that new Pickers do not all start with the
// same node.
func TestRoundRobinRandomStart(t *testing.T) {
	tests := []struct {
		name  string
		nodes []spec
	}{
		{"equal", uniform(4)},
		{"weighted", weighted(5, 1, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := makeNodes(tt.nodes...)
			first := make([]int, len(nodes))
			for range 500 {
				first[balancer.RoundRobin().Build(nodes).Pick()]++
			}
			// Each node starts a 5:1:1 schedule with probability at least
			// 1/7; missing one in 500 builds has a probability below 10⁻³³.
			for i, c := range first {
				assert.Positive(t, c, "Pickers of 500 that started with node %d; first picks %v", i, first)
			}
		})
	}
}

func TestSmoothWeightedRoundRobin(t *testing.T) {
	tests := []struct {
		name    string
		weights []float64
		reduced []int // quantized weights divided by their gcd
	}{
		{"5:1:1", []float64{5, 1, 1}, []int{5, 1, 1}},
		{"4:4:1", []float64{4, 4, 1}, []int{4, 4, 1}},
		{"master at half weight", []float64{0.5, 1, 1, 1}, []int{1, 2, 2, 2}},
		{"3:2:1", []float64{3, 2, 1}, []int{100, 67, 33}},
		{"10:1", []float64{10, 1}, []int{10, 1}},
		{"mixed eight", []float64{1, 1, 0.5, 0.25, 1, 0.75, 0.5, 1}, []int{4, 4, 2, 1, 4, 3, 2, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(tt.weights)
			period := 0
			for _, w := range tt.reduced {
				period += w
			}
			p := balancer.RoundRobin().Build(makeNodes(weighted(tt.weights...)...))

			// Exactly proportional over whole periods.
			periods := max(1, 100_000/period)
			seq := pickSequence(t, p, n, periods*period)
			counts := make([]int, n)
			for _, i := range seq {
				counts[i]++
			}
			for i, c := range counts {
				assert.Equal(t, tt.reduced[i]*periods, c, "picks of node %d in %d periods of %d", i, periods, period)
			}

			// Smooth: in every run of L consecutive picks, each node is
			// picked fewer than L*share + 2 times and more than L*share - 2
			// times. A bursty schedule such as 4:4:1 as a a a a b b b b c
			// breaks this.
			seq = pickSequence(t, p, n, 2*period)
			for i, w := range tt.reduced {
				share := float64(w) / float64(period)
				for start := range period {
					c := 0
					for l := 1; l <= period; l++ {
						if seq[start+l-1] == i {
							c++
						}
						d := float64(c) - float64(l)*share
						require.Less(t, math.Abs(d), 2.0,
							"node %d (share %.3f) picked %d times in the %d picks from %d; sequence %v",
							i, share, c, l, start, seq)
					}
				}
			}
		})
	}
}

// TestSmoothWeightedRoundRobinRuns checks the longest run of the heaviest node
// against what a bursty weighted round robin would give.
func TestSmoothWeightedRoundRobinRuns(t *testing.T) {
	tests := []struct {
		name    string
		weights []float64
		maxRun  int // longest run of node 0 under nginx's order
	}{
		{"5:1:1", []float64{5, 1, 1}, 4},      // a a b a c a a, repeated
		{"4:4:1", []float64{4, 4, 1}, 1},      // a b a b c a b a b
		{"2:1", []float64{2, 1}, 2},           // a b a
		{"10:1", []float64{10, 1}, 10},        // one b per period
		{"3:1:1:1", []float64{3, 1, 1, 1}, 2}, // a b a c a d
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := balancer.RoundRobin().Build(makeNodes(weighted(tt.weights...)...))
			run, longest := 0, 0
			for _, i := range pickSequence(t, p, len(tt.weights), 10_000) {
				if i == 0 {
					run++
					longest = max(longest, run)
				} else {
					run = 0
				}
			}
			assert.Equal(t, tt.maxRun, longest, "longest run of node 0")
		})
	}
}

func TestRandomDistribution(t *testing.T) {
	for _, n := range []int{2, 8, 64} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			p := balancer.Random().Build(makeNodes(uniform(n)...))
			want := make([]float64, n)
			for i := range want {
				want[i] = 1 / float64(n)
			}
			checkSharesStat(t, countPicks(t, p, n, max(100_000, 2000*n)), want)
		})
	}
}

func TestWeightedRandomDistribution(t *testing.T) {
	weights := make([]float64, 64)
	for i := range weights {
		weights[i] = float64(i%8 + 1)
	}
	p := balancer.WeightedRandom().Build(makeNodes(weighted(weights...)...))
	checkSharesStat(t, countPicks(t, p, len(weights), 400_000), shares(weights...))
}

// TestLeastBusyFillsByWeight simulates acquires without releases: least_busy
// keeps every node's InUse/Weight level, so connections end up in
// proportion to weight.
func TestLeastBusyFillsByWeight(t *testing.T) {
	nodes := makeNodes(weighted(0.5, 1, 1, 1)...)
	p := balancer.LeastBusy().Build(nodes)
	for range 700 {
		nodes[p.Pick()].InUse.Add(1)
	}
	want := []int64{100, 200, 200, 200}
	for i, w := range want {
		assert.InDelta(t, w, nodes[i].InUse.Load(), 1, "node %d in use after 700 acquires", i)
	}
}

// TestLeastBusySpreadsTies checks that ties among idle nodes are broken at
// random: with every node idle and one busy, only the idle nodes are picked,
// and each of them sometimes.
func TestLeastBusySpreadsTies(t *testing.T) {
	nodes := makeNodes(spec{use: 1}, spec{}, spec{}, spec{use: 1}, spec{})
	counts := countPicks(t, balancer.LeastBusy().Build(nodes), len(nodes), 10_000)
	for i, c := range counts {
		if nodes[i].InUse.Load() == 0 {
			assert.Positive(t, c, "picks of idle node %d; counts %v", i, counts)
		} else {
			assert.Zero(t, c, "picks of busy node %d; counts %v", i, counts)
		}
	}
}

func TestP2CPrefersLowLatency(t *testing.T) {
	ms := time.Millisecond
	nodes := makeNodes(spec{lat: ms}, spec{lat: 10 * ms}, spec{lat: 10 * ms}, spec{lat: 10 * ms})
	// Node 0 wins the 3 pairs of 6 that include it; the others tie.
	counts := countPicks(t, balancer.P2C().Build(nodes), len(nodes), 100_000)
	checkSharesStat(t, counts, shares(3, 1, 1, 1))
}

// TestP2CBalancesLoad simulates acquires without releases: p2c sends
// connections to the faster node until its extra load makes up for its lower
// latency.
func TestP2CBalancesLoad(t *testing.T) {
	nodes := makeNodes(spec{lat: time.Millisecond}, spec{lat: 10 * time.Millisecond})
	p := balancer.P2C().Build(nodes)
	for range 1100 {
		nodes[p.Pick()].InUse.Add(1)
	}
	fast, slow := nodes[0].InUse.Load(), nodes[1].InUse.Load()
	// Node 0 is picked while (fast+1)*1ms < (slow+1)*10ms.
	ratio := float64(fast+1) / float64(slow+1)
	assert.InDelta(t, 10, ratio, 0.5, "(fast+1)/(slow+1) with %d and %d in use", fast, slow)
}

// TestLeastLagDistribution checks least_lag over 64 replicas of varied
// weight: the 16 within the tolerance of the least lagged share the reads in
// proportion to weight; those further behind in bytes or in time, or of
// unknown lag, get none.
func TestLeastLagDistribution(t *testing.T) {
	specs := make([]spec, 64)
	weights := make([]float64, 64)
	for i := range specs {
		specs[i].w = float64(i%3 + 1)
		switch i % 4 {
		case 0: // 0 to 960 KiB behind: within 1 MiB of the first
			specs[i].lag = &lag{bytes: int64(i/4) << 16, time: time.Duration(i) * time.Millisecond}
			weights[i] = specs[i].w
		case 1: // too far behind in bytes
			specs[i].lag = &lag{bytes: 2<<20 + int64(i)}
		case 2: // close in bytes, too far behind in time
			specs[i].lag = &lag{bytes: 4096, time: 200 * time.Millisecond}
		case 3: // unknown
		}
	}
	p := balancer.LeastLag().Build(makeNodes(specs...))
	checkSharesStat(t, countPicks(t, p, len(specs), 400_000), shares(weights...))
}
