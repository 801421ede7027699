package balancer

import (
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// unknownLatency is the latency P2C assumes for a node whose latency is not
// known (0).
const unknownLatency = time.Microsecond

// P2C returns a Builder of the "p2c" policy, a latency-aware power of two
// choices.
//
// Pick draws two distinct candidates uniformly at random and keeps the one
// with the lower score
//
//	(InUse + 1) * Latency / Weight
//
// where InUse is read live and an unknown Latency (0, or a negative value)
// counts as 1µs. On a tie it keeps the first of the two draws,
// which is either candidate with equal probability. Comparing only two
// candidates avoids the herd behaviour of always taking the global best,
// while still steering most connections away from slow or busy nodes. With
// exactly two candidates the better one always wins.
//
// The Builder and its Pickers are safe for concurrent use. Pick takes constant
// time and does not allocate.
func P2C() Builder { return p2cBuilder{} }

type p2cBuilder struct{}

// ReadsInUse implements LoadAware.
func (p2cBuilder) ReadsInUse() bool { return true }

func (p2cBuilder) Name() string { return nameP2C }

func (p2cBuilder) Build(nodes []Node) Picker {
	checkNodes(nodes, nameP2C)
	if len(nodes) == 1 {
		return single{}
	}
	rel, _ := relativeWeights(nodes)
	p := &p2cPicker{nodes: make([]p2cNode, len(nodes))}
	for i := range nodes {
		lat := nodes[i].Latency
		if lat <= 0 {
			lat = unknownLatency
		}
		p.nodes[i] = p2cNode{
			inUse: inUseOf(&nodes[i]),
			cost:  float64(lat) * inverse(rel[i]),
		}
	}
	return p
}

type p2cNode struct {
	inUse *atomic.Int64
	cost  float64 // latency in nanoseconds / relative weight, > 0
}

type p2cPicker struct {
	nodes []p2cNode
}

func (p *p2cPicker) Pick() int {
	n := len(p.nodes)
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := &p.nodes[i], &p.nodes[j]
	if float64(b.inUse.Load()+1)*b.cost < float64(a.inUse.Load()+1)*a.cost {
		return j
	}
	return i
}
