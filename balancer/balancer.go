package balancer

import (
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"time"
)

// Node is one candidate as a Picker sees it.
//
// A Builder may keep the slice of nodes passed to Build; nobody modifies it
// after Build, nor the Tags map. Only the counter InUse points to changes
// afterwards.
type Node struct {
	// Index is the node's position in the connection string, 0-based. It is
	// stable for the lifetime of a manager.
	Index int

	// Addr is the node's "host:port" as written in the connection string.
	Addr string

	// Weight is the node's relative weight. It is 1 for an ordinary node; a
	// master that also serves reads may have less. The builders in this
	// package treat a Weight that is not a positive finite number as 1.
	Weight float64

	// Latency is the smoothed round-trip time of the node's health checks, or
	// 0 when it is not known yet. It is a snapshot taken when the candidate
	// set was built.
	Latency time.Duration

	// InUse counts the node's connections that are currently acquired. The
	// manager updates it on every acquire and release, so a Picker that reads
	// it sees the live value. It may be nil, which reads as 0.
	InUse *atomic.Int64

	// Tags are the node's tags, as its discovery found them (Patroni's
	// tags, a zone, the user's own), or nil. Read-only: a Builder may keep
	// the map but must not modify it.
	Tags map[string]string

	// LagBytes and Lag are the node's replication lag behind the master,
	// in bytes of WAL and in time, when the candidate set was built. They
	// mean something only when LagKnown is set: a lag that could not be
	// measured yet is unknown, never 0. A master's lag is 0 and known.
	LagBytes int64
	Lag      time.Duration
	LagKnown bool
}

// Builder turns a candidate set into an immutable Picker.
//
// Build is called off the hot path, each time the manager's view of the
// cluster changes, once per candidate set (masters, replicas, sync replicas,
// ...). nodes is never empty. The builders in this package panic if it is,
// keep no state between calls, and are safe for concurrent use.
type Builder interface {
	// Name returns the policy's name, as accepted by ByName.
	Name() string

	// Build returns a Picker that chooses among nodes.
	Build(nodes []Node) Picker
}

// LoadAware is implemented by Builders that say whether their Pickers read
// Node.InUse. Keeping InUse up to date costs an atomic operation on every
// acquire and release, which the manager skips when its Builder reports
// false. A Builder that does not implement LoadAware is taken to read InUse.
type LoadAware interface {
	ReadsInUse() bool
}

// ReadsInUse reports whether b's Pickers read Node.InUse.
func ReadsInUse(b Builder) bool {
	if la, ok := b.(LoadAware); ok {
		return la.ReadsInUse()
	}
	return true
}

// Picker chooses one candidate.
//
// Pick is called concurrently on the hot path of every connection acquire. It
// must be safe for concurrent use and lock-free, and must not block, do I/O,
// or allocate.
type Picker interface {
	// Pick returns an index into the nodes slice passed to Build.
	Pick() int
}

// Policy names, as returned by Builder.Name.
const (
	nameRoundRobin     = "round_robin"
	nameRandom         = "random"
	nameWeightedRandom = "weighted"
	nameLeastBusy      = "least_busy"
	nameP2C            = "p2c"
	nameFirst          = "first"
	nameLeastLag       = "least_lag"
)

// validNames lists the canonical policy names in the order error messages
// show them.
var validNames = []string{
	nameRoundRobin,
	nameRandom,
	nameWeightedRandom,
	nameLeastBusy,
	nameP2C,
	nameFirst,
	nameLeastLag,
}

// ByName returns the Builder of the policy called name.
//
// It accepts the names the builders report ("round_robin", "random",
// "weighted", "least_busy", "p2c", "first", "least_lag") and the aliases
// "roundrobin", "round-robin", "weighted_random", "least-busy", "leastbusy",
// "least-lag" and "leastlag". Matching
// ignores case and surrounding white space. An unknown name, including the
// empty string, returns an error that quotes name and lists the valid names.
//
// ByName is safe for concurrent use. There is no registry: a custom Builder is
// used by passing it directly wherever a Builder is accepted.
func ByName(name string) (Builder, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case nameRoundRobin, "roundrobin", "round-robin":
		return RoundRobin(), nil
	case nameRandom:
		return Random(), nil
	case nameWeightedRandom, "weighted_random":
		return WeightedRandom(), nil
	case nameLeastBusy, "least-busy", "leastbusy":
		return LeastBusy(), nil
	case nameP2C:
		return P2C(), nil
	case nameFirst:
		return First(), nil
	case nameLeastLag, "least-lag", "leastlag":
		return LeastLag(), nil
	}
	return nil, fmt.Errorf("balancer: unknown policy %q (valid policies: %s)",
		name, strings.Join(validNames, ", "))
}

// single is the Picker of every policy for a set of one candidate.
type single struct{}

func (single) Pick() int { return 0 }

// zeroInUse stands in for a nil Node.InUse, so that hot loops need no nil
// check. Nothing ever writes to it.
var zeroInUse atomic.Int64

// inUseOf returns n.InUse, or a counter that always reads 0 if it is nil.
func inUseOf(n *Node) *atomic.Int64 {
	if n.InUse == nil {
		return &zeroInUse
	}
	return n.InUse
}

// checkNodes panics if nodes is empty, which breaks the Builder contract.
func checkNodes(nodes []Node, policy string) {
	if len(nodes) == 0 {
		panic("balancer: " + policy + ": Build called with no nodes")
	}
}

// weightOf returns n.Weight, or 1 if it is not a positive finite number.
func weightOf(n *Node) float64 {
	w := n.Weight
	if !(w > 0) || math.IsInf(w, 1) {
		return 1
	}
	return w
}

// relativeWeights returns every node's weight divided by the largest weight,
// so that each is in (0, 1] (a weight far smaller than the largest may round
// to 0), and whether all weights are equal.
func relativeWeights(nodes []Node) (rel []float64, equal bool) {
	rel = make([]float64, len(nodes))
	maxW := 0.0
	equal = true
	for i := range nodes {
		rel[i] = weightOf(&nodes[i])
		if rel[i] != rel[0] {
			equal = false
		}
		maxW = max(maxW, rel[i])
	}
	for i := range rel {
		rel[i] /= maxW
	}
	return rel, equal
}

// inverse returns 1/x, capped at math.MaxFloat64 so that multiplying the
// result by 0 never gives NaN.
func inverse(x float64) float64 {
	inv := 1 / x
	if inv > math.MaxFloat64 {
		return math.MaxFloat64
	}
	return inv
}
