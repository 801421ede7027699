package balancer

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"sync/atomic"
)

// maxQuantum is the integer that the largest weight is quantized to for
// smooth weighted round robin. Every other weight becomes an integer in
// [1, maxQuantum] in proportion to it.
const maxQuantum = 100

// cacheLinePad separates the shared round robin counter from the picker's
// read-only fields and from neighbouring heap objects. 128 bytes covers
// adjacent-line prefetching on amd64 and the 128-byte lines of some arm64
// cores.
const cacheLinePad = 128

// RoundRobin returns a Builder of the "round_robin" policy, which takes the
// candidates in turn.
//
// When all candidates have the same weight, a Picker keeps an atomic counter
// and returns it modulo the number of candidates. The counter of each new
// Picker starts at a random position, so that many clients built at the same
// moment do not all begin with the first node.
//
// When weights differ, the Picker uses smooth weighted round robin, as nginx
// does. Build quantizes the weights to integers in [1, 100] relative to the
// largest weight (rounding to nearest), divides them by their greatest common
// divisor, and precomputes one period of the nginx schedule, which spreads
// each node's turns evenly over the period instead of in bursts: weights 5,
// 1 and 1 give the order a a b a c a a. Pick walks that schedule with the
// atomic counter, again from a random position. Over every full period each
// node is picked exactly in proportion to its quantized weight. Weights that
// quantize to the same integer, such as 1 and 0.999, are treated as equal.
//
// Building the schedule takes time proportional to the period (at most 100
// times the number of candidates) times the number of candidates, and memory
// proportional to the period; Pick takes constant time.
//
// The Builder and its Pickers are safe for concurrent use. Pick does not
// allocate.
func RoundRobin() Builder { return roundRobinBuilder{} }

type roundRobinBuilder struct{}

// ReadsInUse implements LoadAware.
func (roundRobinBuilder) ReadsInUse() bool { return false }

func (roundRobinBuilder) Name() string { return nameRoundRobin }

func (roundRobinBuilder) Build(nodes []Node) Picker {
	checkNodes(nodes, nameRoundRobin)
	if len(nodes) == 1 {
		return single{}
	}
	rel, _ := relativeWeights(nodes)
	q := quantize(rel)
	if q == nil {
		p := &roundRobinPicker{mod: newModulus(len(nodes))}
		p.next.Store(rand.Uint64N(p.mod.n))
		return p
	}
	p := &scheduledPicker{schedule: smoothSchedule(q)}
	p.mod = newModulus(len(p.schedule))
	p.next.Store(rand.Uint64N(p.mod.n))
	return p
}

// roundRobinPicker takes n candidates in turn.
type roundRobinPicker struct {
	_    [cacheLinePad]byte
	next atomic.Uint64
	_    [cacheLinePad]byte
	mod  modulus
}

func (p *roundRobinPicker) Pick() int {
	return p.mod.of(p.next.Add(1) - 1)
}

// scheduledPicker walks a precomputed smooth weighted round robin schedule.
type scheduledPicker struct {
	_        [cacheLinePad]byte
	next     atomic.Uint64
	_        [cacheLinePad]byte
	mod      modulus // of len(schedule)
	schedule []int32
}

func (p *scheduledPicker) Pick() int {
	return int(p.schedule[p.mod.of(p.next.Add(1)-1)])
}

// modulus reduces a counter modulo n with two multiplications instead of a
// division, whose latency would otherwise dominate a Pick (Lemire, Kaser and
// Kurz, "Faster remainder by direct computation", 2019). It reduces the
// counter's low 32 bits, so a counter that passes a multiple of 2^32 skips
// ahead once in the cycle, which a round robin does not notice.
type modulus struct {
	n uint64 // 1 <= n < 2^32
	m uint64 // ceil(2^64 / n), 0 for n == 1
}

func newModulus(n int) modulus {
	return modulus{n: uint64(n), m: math.MaxUint64/uint64(n) + 1}
}

// of returns uint32(x) mod n.
func (d modulus) of(x uint64) int {
	hi, _ := bits.Mul64(d.m*uint64(uint32(x)), d.n)
	return int(hi)
}

// quantize maps relative weights in [0, 1] to integers in [1, maxQuantum]
// divided by their greatest common divisor. It returns nil if they are all
// equal.
func quantize(rel []float64) []int {
	q := make([]int, len(rel))
	g := 0
	for i, r := range rel {
		v := int(math.Round(r * maxQuantum))
		q[i] = min(max(v, 1), maxQuantum)
		g = gcd(g, q[i])
	}
	equal := true
	for i := range q {
		q[i] /= g
		if q[i] != q[0] {
			equal = false
		}
	}
	if equal {
		return nil
	}
	return q
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// smoothSchedule returns one period of nginx's smooth weighted round robin
// over weights: at each step every node's current value grows by its weight,
// the node with the largest current value (the lowest index on a tie) is
// chosen, and its current value drops by the total weight. After sum(weights)
// steps every current value is back to zero, so the schedule repeats.
func smoothSchedule(weights []int) []int32 {
	total := 0
	for _, w := range weights {
		total += w
	}
	current := make([]int, len(weights))
	schedule := make([]int32, total)
	for step := range schedule {
		best := 0
		for i, w := range weights {
			current[i] += w
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		schedule[step] = int32(best)
	}
	return schedule
}
