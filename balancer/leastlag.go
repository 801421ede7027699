package balancer

import (
	"math/rand/v2"
	"slices"
	"time"
)

// The tolerances of [LeastLag]: candidates whose lag is this close to the
// smallest share the reads.
const (
	DefaultLagToleranceBytes = 1 << 20 // 1 MiB of WAL
	DefaultLagTolerance      = 100 * time.Millisecond
)

// LeastLag returns a Builder of the "least_lag" policy, which sends reads
// to the candidates whose replication lag is the smallest, within
// DefaultLagToleranceBytes and DefaultLagTolerance. See [LeastLagWithin].
func LeastLag() Builder {
	return LeastLagWithin(DefaultLagToleranceBytes, DefaultLagTolerance)
}

// LeastLagWithin returns a Builder of the "least_lag" policy with the given
// tolerances (a negative one counts as 0).
//
// Build keeps the candidates whose lag is known (Node.LagKnown), then those
// whose LagBytes is at most bytes above the smallest LagBytes, then, among
// these, those whose Lag is at most d above their smallest Lag: bytes
// decide first, time among the nodes that are close in bytes. A negative
// lag counts as 0. At least one candidate qualifies. Pick
// chooses among the qualifying candidates at random, in proportion to
// weight, as [WeightedRandom] does. The others get no reads while the
// Picker lasts. The tolerances keep replicas that are all caught up (whose
// measured lags differ by the WAL written between two checks) sharing the
// reads, instead of the one that happened to be a few bytes ahead taking
// them all. When no candidate's lag is known, every candidate qualifies.
//
// Lag is read when the Picker is built; InUse and Latency are ignored. The
// Builder and its Pickers are safe for concurrent use. Pick takes constant
// time and does not allocate.
func LeastLagWithin(bytes int64, d time.Duration) Builder {
	return leastLagBuilder{tolBytes: max(bytes, 0), tolTime: max(d, 0)}
}

type leastLagBuilder struct {
	tolBytes int64
	tolTime  time.Duration
}

// ReadsInUse implements LoadAware.
func (leastLagBuilder) ReadsInUse() bool { return false }

func (leastLagBuilder) Name() string { return nameLeastLag }

func (b leastLagBuilder) Build(nodes []Node) Picker {
	checkNodes(nodes, nameLeastLag)
	if len(nodes) == 1 {
		return single{}
	}
	idx := b.qualifying(nodes)
	if len(idx) == 1 {
		return fixedPicker(idx[0])
	}
	weights := make([]float64, len(idx))
	maxW, equal := 0.0, true
	for k, i := range idx {
		weights[k] = weightOf(&nodes[i])
		if weights[k] != weights[0] {
			equal = false
		}
		maxW = max(maxW, weights[k])
	}
	if equal && len(idx) == len(nodes) {
		return randomPicker(len(nodes))
	}
	p := &leastLagPicker{idx: idx}
	if !equal {
		for k := range weights {
			weights[k] /= maxW
		}
		p.table = aliasTable(weights)
	}
	return p
}

// qualifying returns the indexes of the candidates within the tolerances of
// the least lag, never none: every candidate when no lag is known.
func (b leastLagBuilder) qualifying(nodes []Node) []int {
	idx := make([]int, 0, len(nodes))
	for i := range nodes {
		if nodes[i].LagKnown {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		for i := range nodes {
			idx = append(idx, i)
		}
		return idx
	}
	// Each difference is of non-negative values, the subtrahend the
	// smaller: no overflow.
	minBytes := max(nodes[idx[0]].LagBytes, 0)
	for _, i := range idx {
		minBytes = min(minBytes, max(nodes[i].LagBytes, 0))
	}
	idx = slices.DeleteFunc(idx, func(i int) bool {
		return max(nodes[i].LagBytes, 0)-minBytes > b.tolBytes
	})
	minTime := max(nodes[idx[0]].Lag, 0)
	for _, i := range idx {
		minTime = min(minTime, max(nodes[i].Lag, 0))
	}
	return slices.DeleteFunc(idx, func(i int) bool {
		return max(nodes[i].Lag, 0)-minTime > b.tolTime
	})
}

// leastLagPicker picks among the qualifying candidates idx: uniformly, or
// through an alias table over their weights.
type leastLagPicker struct {
	idx   []int
	table []aliasColumn // nil when the weights are equal
}

func (p *leastLagPicker) Pick() int {
	k := rand.IntN(len(p.idx))
	if p.table != nil {
		if c := &p.table[k]; rand.Float64() >= c.prob {
			k = c.alias
		}
	}
	return p.idx[k]
}
