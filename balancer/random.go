package balancer

import "math/rand/v2"

// Random returns a Builder of the "random" policy, which picks a candidate
// uniformly at random, ignoring weights, latency and connections in use.
//
// Random numbers come from the top-level functions of math/rand/v2, which are
// lock-free. The Builder and its Pickers are safe for concurrent use. Pick
// takes constant time and does not allocate.
func Random() Builder { return randomBuilder{} }

type randomBuilder struct{}

// ReadsInUse implements LoadAware.
func (randomBuilder) ReadsInUse() bool { return false }

func (randomBuilder) Name() string { return nameRandom }

func (randomBuilder) Build(nodes []Node) Picker {
	checkNodes(nodes, nameRandom)
	if len(nodes) == 1 {
		return single{}
	}
	return randomPicker(len(nodes))
}

// randomPicker picks uniformly among its value's number of candidates.
type randomPicker int

func (p randomPicker) Pick() int { return rand.IntN(int(p)) }

// WeightedRandom returns a Builder of the "weighted" policy, which picks a
// candidate at random with probability proportional to its Weight.
//
// Build prepares an alias table (Vose's method), so that Pick takes constant
// time whatever the number of candidates: it draws a uniform column and a
// uniform number in [0, 1) to choose between the column's own node and its
// alias. When all weights are equal the Picker is the same as Random's.
//
// The Builder and its Pickers are safe for concurrent use. Pick does not
// allocate.
func WeightedRandom() Builder { return weightedRandomBuilder{} }

type weightedRandomBuilder struct{}

// ReadsInUse implements LoadAware.
func (weightedRandomBuilder) ReadsInUse() bool { return false }

func (weightedRandomBuilder) Name() string { return nameWeightedRandom }

func (weightedRandomBuilder) Build(nodes []Node) Picker {
	checkNodes(nodes, nameWeightedRandom)
	if len(nodes) == 1 {
		return single{}
	}
	rel, equal := relativeWeights(nodes)
	if equal {
		return randomPicker(len(nodes))
	}
	return &aliasPicker{table: aliasTable(rel)}
}

// aliasColumn is one column of an alias table: the column's own node is
// chosen with probability prob, the node alias otherwise.
type aliasColumn struct {
	prob  float64
	alias int
}

type aliasPicker struct {
	table []aliasColumn
}

func (p *aliasPicker) Pick() int {
	i := rand.IntN(len(p.table))
	c := &p.table[i]
	if rand.Float64() < c.prob {
		return i
	}
	return c.alias
}

// aliasTable builds an alias table over weights with Vose's method. Weights
// must be non-negative with a positive sum.
func aliasTable(weights []float64) []aliasColumn {
	n := len(weights)
	sum := 0.0
	for _, w := range weights {
		sum += w
	}
	scaled := make([]float64, n)
	small := make([]int, 0, n)
	large := make([]int, 0, n)
	for i, w := range weights {
		scaled[i] = w * float64(n) / sum
		if scaled[i] < 1 {
			small = append(small, i)
		} else {
			large = append(large, i)
		}
	}
	table := make([]aliasColumn, n)
	for len(small) > 0 && len(large) > 0 {
		s := small[len(small)-1]
		small = small[:len(small)-1]
		l := large[len(large)-1]
		table[s] = aliasColumn{prob: scaled[s], alias: l}
		scaled[l] = (scaled[l] + scaled[s]) - 1
		if scaled[l] < 1 {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	// Whatever is left is 1 up to rounding error.
	for _, i := range large {
		table[i] = aliasColumn{prob: 1, alias: i}
	}
	for _, i := range small {
		table[i] = aliasColumn{prob: 1, alias: i}
	}
	return table
}
