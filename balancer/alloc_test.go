package balancer_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/pgxha/pgxha/balancer"
)

// benchNodes returns n nodes with varied latency, connections in use and
// lag. With weighted set, node 0 has weight 0.5 and the others 1, as for a
// master that serves a share of the reads; otherwise every weight is 1. No
// node is idle, so least_busy scans every node; half the nodes are within
// least_lag's tolerance (0 or 1 MiB behind), so it picks among a subset.
func benchNodes(n int, weighted bool) []balancer.Node {
	specs := make([]spec, n)
	for i := range specs {
		specs[i] = spec{
			w:   1,
			lat: time.Duration(i%7+1) * 100 * time.Microsecond,
			use: int64(i%5 + 1),
			lag: &lag{bytes: int64(i%4) << 20},
		}
	}
	if weighted {
		specs[0].w = 0.5
	}
	return makeNodes(specs...)
}

var sink int

func TestPickAllocs(t *testing.T) {
	for _, b := range policies {
		for _, weighted := range []bool{false, true} {
			for _, n := range []int{1, 2, 8, 64} {
				name := b.Name() + "/" + strconv.Itoa(n)
				if weighted {
					name += "/weighted"
				}
				t.Run(name, func(t *testing.T) {
					p := b.Build(benchNodes(n, weighted))
					allocs := testing.AllocsPerRun(1000, func() { sink = p.Pick() })
					assert.Zero(t, allocs, "allocations per Pick")
				})
			}
		}
	}
}
