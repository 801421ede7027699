package balancer

// First returns a Builder of the "first" policy, which always picks the
// candidate with the lowest Index, that is the first in the connection
// string's order. This is what libpq does with load_balance_hosts=disable.
//
// The candidate is chosen once, in Build; weights, latency and connections in
// use are ignored. The Builder and its Pickers are safe for concurrent use.
// Pick takes constant time and does not allocate.
func First() Builder { return firstBuilder{} }

type firstBuilder struct{}

// ReadsInUse implements LoadAware.
func (firstBuilder) ReadsInUse() bool { return false }

func (firstBuilder) Name() string { return nameFirst }

func (firstBuilder) Build(nodes []Node) Picker {
	checkNodes(nodes, nameFirst)
	if len(nodes) == 1 {
		return single{}
	}
	best := 0
	for i := range nodes {
		if nodes[i].Index < nodes[best].Index {
			best = i
		}
	}
	return fixedPicker(best)
}

// fixedPicker always picks its value.
type fixedPicker int

func (p fixedPicker) Pick() int { return int(p) }
