package balancer

import (
	"math"
	"math/rand/v2"
	"sync/atomic"
)

// LeastBusy returns a Builder of the "least_busy" policy, which picks the
// candidate with the fewest connections in use relative to its weight, that
// is the one with the smallest InUse/Weight and so the most idle capacity.
//
// Pick reads every candidate's live InUse counter, scanning from a random
// offset and keeping the first candidate with the smallest score, so that
// when all candidates tie (as in an idle cluster) each is equally likely. It
// stops early at a candidate with no connections in use, since none can beat
// it. Latency is ignored.
//
// The Builder and its Pickers are safe for concurrent use. Pick takes time
// proportional to the number of candidates and does not allocate.
func LeastBusy() Builder { return leastBusyBuilder{} }

type leastBusyBuilder struct{}

// ReadsInUse implements LoadAware.
func (leastBusyBuilder) ReadsInUse() bool { return true }

func (leastBusyBuilder) Name() string { return nameLeastBusy }

func (leastBusyBuilder) Build(nodes []Node) Picker {
	checkNodes(nodes, nameLeastBusy)
	if len(nodes) == 1 {
		return single{}
	}
	rel, equal := relativeWeights(nodes)
	if equal {
		p := &leastInUsePicker{inUse: make([]*atomic.Int64, len(nodes))}
		for i := range nodes {
			p.inUse[i] = inUseOf(&nodes[i])
		}
		return p
	}
	p := &leastBusyPicker{nodes: make([]busyNode, len(nodes))}
	for i := range nodes {
		p.nodes[i] = busyNode{inUse: inUseOf(&nodes[i]), cost: busyCost(inverse(rel[i]))}
	}
	return p
}

// leastInUsePicker is the least_busy Picker for candidates of equal weight:
// it compares InUse directly.
type leastInUsePicker struct {
	inUse []*atomic.Int64
}

func (p *leastInUsePicker) Pick() int {
	start := rand.IntN(len(p.inUse))
	best, bestInUse := start, int64(math.MaxInt64)
	// Scan start..n-1, then 0..start-1, keeping the first minimum.
	for i, c := range p.inUse[start:] {
		u := c.Load()
		if u == 0 {
			return start + i
		}
		if u < bestInUse {
			best, bestInUse = start+i, u
		}
	}
	for i, c := range p.inUse[:start] {
		u := c.Load()
		if u == 0 {
			return i
		}
		if u < bestInUse {
			best, bestInUse = i, u
		}
	}
	return best
}

type busyNode struct {
	inUse *atomic.Int64
	// cost is 1/relative weight (>= 1) in units of 1/busyOne, capped at
	// maxCost, so that a score is one integer multiplication that cannot
	// overflow: InUse counts a node's connections in use, at most its
	// pool's MaxConns, an int32. Weights further apart than 65536 to 1
	// compare as 65536 to 1.
	cost int64
}

const (
	busyOne = 1 << 16
	maxCost = 1 << 32
)

func busyCost(invWeight float64) int64 {
	c := math.Round(invWeight * busyOne)
	if c >= maxCost {
		return maxCost
	}
	return int64(c)
}

// leastBusyPicker is the least_busy Picker for candidates of unequal weight.
// Scores are InUse*cost in integers, comparing as InUse/weight does (up to
// one part in 65536 of the weight).
type leastBusyPicker struct {
	nodes []busyNode
}

func (p *leastBusyPicker) Pick() int {
	start := rand.IntN(len(p.nodes))
	best, bestScore := start, int64(math.MaxInt64)
	// Scan start..n-1, then 0..start-1, keeping the first minimum.
	tail := p.nodes[start:]
	for i := range tail {
		nd := &tail[i]
		u := nd.inUse.Load()
		if u <= 0 {
			return start + i
		}
		if score := u * nd.cost; score < bestScore {
			best, bestScore = start+i, score
		}
	}
	head := p.nodes[:start]
	for i := range head {
		nd := &head[i]
		u := nd.inUse.Load()
		if u <= 0 {
			return i
		}
		if score := u * nd.cost; score < bestScore {
			best, bestScore = i, score
		}
	}
	return best
}
