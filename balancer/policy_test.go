package balancer_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/balancer"
)

// pickCase is one table entry of a policy test: a cluster and the share of
// picks each node should get.
type pickCase struct {
	name  string
	nodes []spec
	picks int       // number of picks; 10,000 if 0
	want  []float64 // expected share of picks per node
	stat  bool      // shares are statistical (six sigma), not exact
}

func runPickCases(t *testing.T, b balancer.Builder, tests []pickCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			picks := tt.picks
			if picks == 0 {
				picks = 10_000
			}
			p := b.Build(makeNodes(tt.nodes...))
			counts := countPicks(t, p, len(tt.nodes), picks)
			if tt.stat {
				checkSharesStat(t, counts, tt.want)
			} else {
				checkShares(t, counts, tt.want, 0)
			}
		})
	}
}

func TestRoundRobin(t *testing.T) {
	third := 1.0 / 3
	runPickCases(t, balancer.RoundRobin(), []pickCase{
		{name: "single node", nodes: uniform(1), want: []float64{1}},
		{name: "two equal", nodes: uniform(2), want: []float64{0.5, 0.5}},
		{name: "three equal", nodes: uniform(3), picks: 3000, want: []float64{third, third, third}},
		{name: "equal weights other than 1", nodes: weighted(0.5, 0.5, 0.5), picks: 3000, want: []float64{third, third, third}},
		{name: "weights equal after quantization", nodes: weighted(1, 0.999), want: []float64{0.5, 0.5}},
		{name: "unequal 5:1:1", nodes: weighted(5, 1, 1), picks: 7000, want: shares(5, 1, 1)},
		{name: "master at half weight", nodes: weighted(0.5, 1, 1, 1), picks: 7000, want: shares(1, 2, 2, 2)},
		{name: "unequal 2:1", nodes: weighted(2, 1), picks: 3000, want: shares(2, 1)},
		// 3:2:1 quantizes to 100:67:33, a period of 200.
		{name: "unequal 3:2:1 quantized", nodes: weighted(3, 2, 1), picks: 20_000, want: shares(100, 67, 33)},
		// 1000:1 quantizes to 100:1 (the smallest weight is clamped to 1).
		{name: "tiny weight clamped", nodes: weighted(1000, 1), picks: 10_100, want: shares(100, 1)},
		{name: "InUse ignored", nodes: []spec{{use: 100}, {}, {use: 3}}, picks: 3000, want: []float64{third, third, third}},
		{name: "latency ignored", nodes: []spec{{lat: time.Second}, {lat: time.Millisecond}}, want: []float64{0.5, 0.5}},
	})
}

func TestRoundRobinOrder(t *testing.T) {
	tests := []struct {
		name  string
		nodes []spec
		cycle []int // one period of the expected order, from any starting point
	}{
		{"two equal", uniform(2), []int{0, 1}},
		{"five equal", uniform(5), []int{0, 1, 2, 3, 4}},
		// The example from nginx's smooth weighted round robin change.
		{"nginx 5:1:1", weighted(5, 1, 1), []int{0, 0, 1, 0, 2, 0, 0}},
		{"4:4:1", weighted(4, 4, 1), []int{0, 1, 0, 1, 2, 0, 1, 0, 1}},
		{"master at half weight", weighted(0.5, 1, 1, 1), []int{1, 2, 3, 0, 1, 2, 3}},
		{"1:4:3", weighted(0.25, 1, 0.75), []int{1, 2, 1, 0, 2, 1, 2, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := balancer.RoundRobin().Build(makeNodes(tt.nodes...))
			seq := pickSequence(t, p, len(tt.nodes), 3*len(tt.cycle))
			assert.True(t, isRotation(seq, tt.cycle), "picks %v are not a repetition of %v", seq, tt.cycle)
		})
	}
}

func TestRandom(t *testing.T) {
	third := 1.0 / 3
	runPickCases(t, balancer.Random(), []pickCase{
		{name: "single node", nodes: uniform(1), want: []float64{1}},
		{name: "equal weights", nodes: uniform(3), picks: 100_000, want: []float64{third, third, third}, stat: true},
		{name: "weights ignored", nodes: weighted(5, 1, 1), picks: 100_000, want: []float64{third, third, third}, stat: true},
		{name: "InUse ignored", nodes: []spec{{use: 100}, {}}, picks: 100_000, want: []float64{0.5, 0.5}, stat: true},
		{name: "latency ignored", nodes: []spec{{lat: time.Second}, {}}, picks: 100_000, want: []float64{0.5, 0.5}, stat: true},
	})
}

func TestWeightedRandom(t *testing.T) {
	third := 1.0 / 3
	runPickCases(t, balancer.WeightedRandom(), []pickCase{
		{name: "single node", nodes: weighted(0.3), want: []float64{1}},
		{name: "equal weights", nodes: uniform(3), picks: 100_000, want: []float64{third, third, third}, stat: true},
		{name: "unequal 5:1:1", nodes: weighted(5, 1, 1), picks: 100_000, want: shares(5, 1, 1), stat: true},
		{name: "unequal 1:2:3:4", nodes: weighted(1, 2, 3, 4), picks: 100_000, want: shares(1, 2, 3, 4), stat: true},
		{name: "master at half weight", nodes: weighted(0.5, 1, 1, 1), picks: 100_000, want: shares(0.5, 1, 1, 1), stat: true},
		{name: "skewed 100:1", nodes: weighted(100, 1), picks: 100_000, want: shares(100, 1), stat: true},
		{name: "InUse ignored", nodes: []spec{{use: 100}, {}}, picks: 100_000, want: []float64{0.5, 0.5}, stat: true},
	})
}

func TestLeastBusy(t *testing.T) {
	runPickCases(t, balancer.LeastBusy(), []pickCase{
		{name: "single node", nodes: []spec{{use: 9}}, want: []float64{1}},
		{name: "fewest in use", nodes: []spec{{use: 5}, {use: 2}, {use: 7}}, want: []float64{0, 1, 0}},
		{name: "idle node", nodes: []spec{{use: 5}, {use: 3}, {use: 0}, {use: 1}}, want: []float64{0, 0, 1, 0}},
		// 4/4 = 1 beats 2/1 = 2.
		{name: "weight decides", nodes: []spec{{w: 4, use: 4}, {w: 1, use: 2}}, want: []float64{1, 0}},
		// 3/0.5 = 6 loses to 5/1 = 5.
		{name: "master at half weight", nodes: []spec{{w: 0.5, use: 3}, {use: 5}, {use: 7}}, want: []float64{0, 1, 0}},
		{name: "latency ignored", nodes: []spec{{lat: time.Second, use: 1}, {lat: time.Microsecond, use: 2}}, want: []float64{1, 0}},
		{name: "all tied", nodes: []spec{{use: 3}, {use: 3}, {use: 3}, {use: 3}}, picks: 100_000, want: shares(1, 1, 1, 1), stat: true},
		{name: "all idle", nodes: uniform(5), picks: 100_000, want: shares(1, 1, 1, 1, 1), stat: true},
		{name: "tied relative to weight", nodes: []spec{{w: 2, use: 4}, {w: 1, use: 2}}, picks: 100_000, want: shares(1, 1), stat: true},
	})
}

func TestLeastBusyNilInUse(t *testing.T) {
	nodes := makeNodes(spec{use: 1}, spec{use: 2}, spec{use: 1})
	nodes[1].InUse = nil // reads as 0: the idlest
	p := balancer.LeastBusy().Build(nodes)
	counts := countPicks(t, p, 3, 1000)
	checkShares(t, counts, []float64{0, 1, 0}, 0)
}

// TestLeastBusyLive checks that a Picker follows InUse changes made after
// Build.
func TestLeastBusyLive(t *testing.T) {
	nodes := makeNodes(spec{use: 1}, spec{use: 2}, spec{use: 3})
	p := balancer.LeastBusy().Build(nodes)
	steps := []struct {
		inUse []int64
		want  int
	}{
		{[]int64{1, 2, 3}, 0},
		{[]int64{4, 2, 3}, 1},
		{[]int64{4, 5, 3}, 2},
		{[]int64{4, 5, 0}, 2},
		{[]int64{0, 5, 9}, 0},
	}
	for _, st := range steps {
		for i, u := range st.inUse {
			nodes[i].InUse.Store(u)
		}
		for range 100 {
			require.Equal(t, st.want, p.Pick(), "InUse %v", st.inUse)
		}
	}
}

func TestP2C(t *testing.T) {
	ms := time.Millisecond
	runPickCases(t, balancer.P2C(), []pickCase{
		{name: "single node", nodes: []spec{{use: 9, lat: ms}}, want: []float64{1}},
		// With two nodes both are always compared, so the better one always
		// wins; drawing the same node twice would give node 0 a quarter.
		{name: "InUse decides", nodes: []spec{{use: 10, lat: ms}, {use: 0, lat: ms}}, want: []float64{0, 1}},
		{name: "latency decides", nodes: []spec{{lat: 5 * ms}, {lat: ms}}, want: []float64{0, 1}},
		// (3+1)*1ms = 4ms loses to (0+1)*3ms = 3ms.
		{name: "InUse outweighs latency", nodes: []spec{{use: 3, lat: ms}, {lat: 3 * ms}}, want: []float64{0, 1}},
		// (1+1)*1ms = 2ms beats (0+1)*3ms = 3ms.
		{name: "latency outweighs InUse", nodes: []spec{{use: 1, lat: ms}, {lat: 3 * ms}}, want: []float64{1, 0}},
		// 1ms/1 beats 1ms/0.25.
		{name: "weight decides", nodes: []spec{{w: 1, lat: ms}, {w: 0.25, lat: ms}}, want: []float64{1, 0}},
		// An unknown latency counts as 1µs: worse than 500ns, better than 2µs.
		{name: "unknown latency vs faster", nodes: []spec{{lat: 0}, {lat: 500 * time.Nanosecond}}, want: []float64{0, 1}},
		{name: "unknown latency vs slower", nodes: []spec{{lat: 0}, {lat: 2 * time.Microsecond}}, want: []float64{1, 0}},
		{name: "unknown latencies", nodes: []spec{{use: 2}, {use: 1}}, want: []float64{0, 1}},
		{name: "tie", nodes: []spec{{use: 2, lat: ms}, {use: 2, lat: ms}}, picks: 100_000, want: shares(1, 1), stat: true},
		// Node 0 wins every pair it is drawn into (2 pairs of 3); nodes 1 and
		// 2 tie when drawn together.
		{name: "three nodes", nodes: []spec{{lat: ms}, {lat: 10 * ms}, {lat: 10 * ms}}, picks: 100_000, want: shares(4, 1, 1), stat: true},
	})
}

func TestP2CNilInUse(t *testing.T) {
	nodes := makeNodes(spec{use: 1}, spec{use: 1})
	nodes[0].InUse = nil // reads as 0
	p := balancer.P2C().Build(nodes)
	checkShares(t, countPicks(t, p, 2, 1000), []float64{1, 0}, 0)
}

func TestFirst(t *testing.T) {
	tests := []struct {
		name    string
		indexes []int // Node.Index of each position
		want    int   // position of the lowest Index
	}{
		{"single node", []int{4}, 0},
		{"in order", []int{0, 1, 2}, 0},
		{"reversed", []int{2, 1, 0}, 2},
		{"shuffled", []int{3, 1, 2}, 1},
		{"gaps", []int{9, 5, 7, 6}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			specs := make([]spec, len(tt.indexes))
			for i := range specs {
				// Make every other policy prefer the last node.
				specs[i] = spec{w: float64(i + 1), use: int64(len(specs) - i), lat: time.Duration(len(specs)-i) * time.Millisecond}
			}
			nodes := makeNodes(specs...)
			for i, idx := range tt.indexes {
				nodes[i].Index = idx
			}
			p := balancer.First().Build(nodes)
			for range 100 {
				require.Equal(t, tt.want, p.Pick(), "want the node with Index %d", tt.indexes[tt.want])
			}
		})
	}
}

func TestLeastLag(t *testing.T) {
	ms := time.Millisecond
	mib := int64(1 << 20)
	caughtUp := &lag{}
	runPickCases(t, balancer.LeastLag(), []pickCase{
		{name: "single node, lag unknown", nodes: []spec{{}}, want: []float64{1}},
		{name: "least bytes", nodes: []spec{{lag: &lag{bytes: 5 * mib}}, {lag: &lag{bytes: 2 * mib}}, {lag: &lag{bytes: 9 * mib}}}, want: []float64{0, 1, 0}},
		{name: "least time", nodes: []spec{{lag: &lag{time: 2 * time.Second}}, {lag: &lag{time: 300 * ms}}}, want: []float64{0, 1}},
		// Among the nodes close in bytes, time decides.
		{name: "bytes close, time far", nodes: []spec{{lag: &lag{bytes: 0, time: time.Second}}, {lag: &lag{bytes: mib / 2}}}, want: []float64{0, 1}},
		{name: "time close, bytes far", nodes: []spec{{lag: &lag{bytes: 3 * mib}}, {lag: &lag{bytes: 0, time: 50 * ms}}}, want: []float64{0, 1}},
		// Bytes decide first: the least time lag of a node far behind in
		// bytes does not count.
		{name: "bytes before time", nodes: []spec{{lag: &lag{bytes: 0, time: time.Second}}, {lag: &lag{bytes: 16 * mib, time: 0}}}, want: []float64{1, 0}},
		{name: "time among the close in bytes", nodes: []spec{{lag: &lag{bytes: 0, time: 90 * ms}}, {lag: &lag{bytes: mib, time: 0}}, {lag: &lag{bytes: mib + 1}}, {lag: &lag{bytes: 10, time: 101 * ms}}}, picks: 100_000, want: shares(1, 1, 0, 0), stat: true},
		{name: "within the tolerance share", nodes: []spec{{lag: &lag{bytes: 100}}, {lag: &lag{bytes: mib, time: 100 * ms}}, {lag: &lag{bytes: mib + 101}}}, picks: 100_000, want: shares(1, 1, 0), stat: true},
		{name: "unknown never beats known", nodes: []spec{{}, {lag: &lag{bytes: 1 << 40, time: time.Hour}}, {}}, want: []float64{0, 1, 0}},
		{name: "all unknown", nodes: uniform(4), picks: 100_000, want: shares(1, 1, 1, 1), stat: true},
		{name: "all unknown, by weight", nodes: weighted(1, 3), picks: 100_000, want: shares(1, 3), stat: true},
		{name: "caught up share", nodes: []spec{{lag: caughtUp}, {lag: caughtUp}, {lag: caughtUp}}, picks: 100_000, want: shares(1, 1, 1), stat: true},
		// A master among the replicas (lag 0, weight 0.5) shares with the
		// caught-up replica in proportion to weight.
		{name: "master at half weight", nodes: []spec{{w: 0.5, lag: caughtUp}, {lag: &lag{bytes: 4096}}, {lag: &lag{bytes: 8 * mib}}}, picks: 100_000, want: shares(0.5, 1, 0), stat: true},
		{name: "negative lag counts as 0", nodes: []spec{{lag: &lag{bytes: -5 * mib, time: -time.Hour}}, {lag: &lag{bytes: mib}}, {lag: &lag{bytes: 2 * mib}}}, picks: 100_000, want: shares(1, 1, 0), stat: true},
		{name: "InUse and latency ignored", nodes: []spec{{use: 100, lat: time.Second, lag: caughtUp}, {lag: &lag{bytes: 2 * mib}}}, want: []float64{1, 0}},
	})
}

func TestLeastLagWithin(t *testing.T) {
	mib := int64(1 << 20)
	nodes := []spec{{lag: &lag{bytes: 0}}, {lag: &lag{bytes: 3 * mib, time: 2 * time.Second}}, {lag: &lag{bytes: 10 * mib, time: time.Minute}}}
	tests := []struct {
		name  string
		bytes int64
		d     time.Duration
		want  []float64
	}{
		{"no tolerance", 0, 0, []float64{1, 0, 0}},
		{"negative counts as 0", -1, -time.Second, []float64{1, 0, 0}},
		{"bytes alone do not admit", 4 * mib, 0, []float64{1, 0, 0}},
		{"both admit", 4 * mib, 2 * time.Second, shares(1, 1, 0)},
		{"everything", 1 << 40, time.Hour, shares(1, 1, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := balancer.LeastLagWithin(tt.bytes, tt.d)
			assert.Equal(t, "least_lag", b.Name())
			counts := countPicks(t, b.Build(makeNodes(nodes...)), len(nodes), 100_000)
			checkSharesStat(t, counts, tt.want)
		})
	}
}

// TestInvalidWeights checks that weights outside the documented range are
// treated as 1 rather than breaking a policy.
func TestInvalidWeights(t *testing.T) {
	weights := []float64{0, -1, nan(), inf(), 1}
	quarter := shares(1, 1, 1, 1, 1)
	for _, b := range []balancer.Builder{balancer.RoundRobin(), balancer.Random(), balancer.WeightedRandom(), balancer.LeastLag()} {
		t.Run(b.Name(), func(t *testing.T) {
			nodes := makeNodes(uniform(len(weights))...)
			for i, w := range weights {
				nodes[i].Weight = w
			}
			counts := countPicks(t, b.Build(nodes), len(nodes), 100_000)
			checkSharesStat(t, counts, quarter)
		})
	}
	for _, b := range []balancer.Builder{balancer.LeastBusy(), balancer.P2C()} {
		t.Run(b.Name(), func(t *testing.T) {
			// Every weight counts as 1, so InUse alone decides.
			nodes := makeNodes(spec{use: 3}, spec{use: 3}, spec{use: 3}, spec{use: 3}, spec{use: 1})
			for i, w := range weights {
				nodes[i].Weight = w
			}
			p := b.Build(nodes)
			if b.Name() == "least_busy" {
				checkShares(t, countPicks(t, p, len(nodes), 1000), []float64{0, 0, 0, 0, 1}, 0)
				return
			}
			// p2c: node 4 wins every pair it is in (4 of 10 pairs), and the
			// other nodes tie.
			checkSharesStat(t, countPicks(t, p, len(nodes), 100_000), shares(1.5, 1.5, 1.5, 1.5, 4))
		})
	}
}
