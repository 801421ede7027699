// Package balancer chooses which node of a replicated PostgreSQL cluster
// serves the next connection.
//
// A load balancing policy has two halves. A [Builder] is called off the hot
// path whenever the manager's view of the cluster changes, once per candidate
// set (the masters, the replicas, the synchronous replicas, ...), and turns
// that set of [Node] values into an immutable [Picker]. The manager then calls
// [Picker.Pick] on every connection acquire, concurrently, until the next
// rebuild replaces the Picker. Keeping all the preparation in Build lets Pick
// be lock-free, constant-time or close to it, and free of allocations.
//
// What a Picker may look at is fixed when it is built (a node's weight,
// latency, replication lag and tags), except for [Node.InUse], a counter of
// acquired connections that the manager keeps up to date and that a Picker
// can read with no locking.
//
// # Policies
//
// The package provides these policies; [ByName] maps a policy's name, as
// found in a configuration or connection string, to its Builder:
//
//   - [RoundRobin] ("round_robin"): takes the candidates in turn, in smooth
//     weighted round robin order when their weights differ.
//   - [Random] ("random"): uniform among the candidates.
//   - [WeightedRandom] ("weighted"): at random, in proportion to weight.
//   - [LeastBusy] ("least_busy"): the fewest connections in use relative to
//     weight.
//   - [P2C] ("p2c"): the better of two random candidates, by connections in
//     use, latency and weight.
//   - [First] ("first"): the first candidate in connection string order.
//   - [LeastLag] ("least_lag"): at random, in proportion to weight, among
//     the candidates whose replication lag is the smallest (within a
//     tolerance).
//
// With a single candidate, every policy's Picker returns 0 at once.
//
// # Writing a custom balancer
//
// Any type that implements [Builder] can be used wherever a Builder is
// accepted; there is no registry. This one sends every connection to the
// candidate with the lowest known health-check latency:
//
//	type fastest struct{}
//
//	func (fastest) Name() string { return "fastest" }
//
//	func (fastest) Build(nodes []balancer.Node) balancer.Picker {
//		best := 0
//		for i, n := range nodes {
//			if n.Latency > 0 && (nodes[best].Latency == 0 || n.Latency < nodes[best].Latency) {
//				best = i
//			}
//		}
//		return fixed(best)
//	}
//
//	// fixed always picks the same candidate. It is immutable, so Pick is safe
//	// for concurrent use and does not allocate.
//	type fixed int
//
//	func (f fixed) Pick() int { return int(f) }
//
// A Picker that must vary its answer keeps its state in atomics, as
// [RoundRobin]'s counter does, or draws from the top-level functions of
// math/rand/v2, which are safe for concurrent use and do not lock.
package balancer
