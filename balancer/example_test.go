package balancer_test

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/pgxha/pgxha/balancer"
)

// fastest is a custom policy: it sends every connection to the candidate with
// the lowest known health-check latency.
type fastest struct{}

func (fastest) Name() string { return "fastest" }

func (fastest) Build(nodes []balancer.Node) balancer.Picker {
	best := 0
	for i, n := range nodes {
		if n.Latency > 0 && (nodes[best].Latency == 0 || n.Latency < nodes[best].Latency) {
			best = i
		}
	}
	return fixed(best)
}

// fixed always picks the same candidate. It is immutable, so Pick is safe for
// concurrent use and does not allocate.
type fixed int

func (f fixed) Pick() int { return int(f) }

// This example writes a custom Builder and uses it like the built-in ones.
func Example_customBalancer() {
	var b balancer.Builder = fastest{}
	nodes := []balancer.Node{
		{Index: 0, Addr: "db1:5432", Weight: 1, Latency: 4 * time.Millisecond},
		{Index: 1, Addr: "db2:5432", Weight: 1, Latency: 0}, // not measured yet
		{Index: 2, Addr: "db3:5432", Weight: 1, Latency: 900 * time.Microsecond},
	}
	p := b.Build(nodes)
	fmt.Println(b.Name(), nodes[p.Pick()].Addr)
	// Output: fastest db3:5432
}

func ExampleByName() {
	b, err := balancer.ByName("least-busy")
	fmt.Println(b.Name(), err)

	_, err = balancer.ByName("fastest")
	fmt.Println(err)
	// Output:
	// least_busy <nil>
	// balancer: unknown policy "fastest" (valid policies: round_robin, random, weighted, least_busy, p2c, first, least_lag)
}

func ExampleFirst() {
	// Candidates need not be in connection string order.
	nodes := []balancer.Node{
		{Index: 2, Addr: "db3:5432", Weight: 1},
		{Index: 0, Addr: "db1:5432", Weight: 1},
		{Index: 1, Addr: "db2:5432", Weight: 1},
	}
	p := balancer.First().Build(nodes)
	fmt.Println(nodes[p.Pick()].Addr)
	// Output: db1:5432
}

func ExampleLeastBusy() {
	nodes := make([]balancer.Node, 3)
	for i := range nodes {
		nodes[i] = balancer.Node{Index: i, Addr: fmt.Sprintf("db%d:5432", i+1), Weight: 1, InUse: new(atomic.Int64)}
	}
	p := balancer.LeastBusy().Build(nodes)

	// The manager updates InUse on every acquire and release; the Picker
	// reads the live values.
	nodes[0].InUse.Store(4)
	nodes[1].InUse.Store(1)
	nodes[2].InUse.Store(3)
	fmt.Println(nodes[p.Pick()].Addr)

	nodes[1].InUse.Add(5)
	fmt.Println(nodes[p.Pick()].Addr)
	// Output:
	// db2:5432
	// db3:5432
}
