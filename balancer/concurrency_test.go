package balancer_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/pgxha/pgxha/balancer"
)

// TestConcurrentPick has many goroutines pick while others acquire and
// release connections and rebuild the Picker, as a manager does. Run it with
// -race.
func TestConcurrentPick(t *testing.T) {
	const (
		n       = 8
		pickers = 8
		picks   = 20_000
	)
	for _, b := range policies {
		t.Run(b.Name(), func(t *testing.T) {
			// The InUse counters outlive every rebuild; everything else is
			// fresh in each candidate set.
			counters := make([]*atomic.Int64, n)
			for i := range counters {
				counters[i] = new(atomic.Int64)
			}
			candidates := func(round int) []balancer.Node {
				nodes := make([]balancer.Node, n)
				for i := range nodes {
					nodes[i] = balancer.Node{
						Index:   i,
						Addr:    "db:5432",
						Weight:  float64((i+round)%4+1) / 4,
						Latency: time.Duration((i*7+round)%5) * time.Millisecond,
						InUse:   counters[i],
					}
				}
				return nodes
			}
			var current atomic.Pointer[balancer.Picker]
			store := func(p balancer.Picker) { current.Store(&p) }
			store(b.Build(candidates(0)))

			var (
				bad     atomic.Int64 // picks out of range
				lastBad atomic.Int64
				stop    = make(chan struct{})
				pickWG  sync.WaitGroup
				bgWG    sync.WaitGroup
			)

			// Acquire and release connections on the picked nodes.
			for range pickers {
				pickWG.Add(1)
				go func() {
					defer pickWG.Done()
					held := make([]int, 0, 16)
					for k := range picks {
						i := (*current.Load()).Pick()
						if i < 0 || i >= n {
							bad.Add(1)
							lastBad.Store(int64(i))
							continue
						}
						counters[i].Add(1)
						held = append(held, i)
						if len(held) == cap(held) || k == picks-1 {
							for _, h := range held {
								counters[h].Add(-1)
							}
							held = held[:0]
						}
					}
				}()
			}

			// Rebuild the Picker with changing weights and latencies.
			bgWG.Add(1)
			go func() {
				defer bgWG.Done()
				for round := 1; ; round++ {
					select {
					case <-stop:
						return
					default:
					}
					store(b.Build(candidates(round)))
				}
			}()

			// Churn the counters independently of the pickers.
			bgWG.Add(1)
			go func() {
				defer bgWG.Done()
				for k := 0; ; k++ {
					select {
					case <-stop:
						return
					default:
					}
					c := counters[k%n]
					c.Add(3)
					c.Add(-3)
				}
			}()

			pickWG.Wait()
			close(stop)
			bgWG.Wait()

			assert.Zero(t, bad.Load(), "picks out of [0, %d), e.g. %d", n, lastBad.Load())
			for i, c := range counters {
				assert.Zero(t, c.Load(), "node %d: InUse after every release", i)
			}
		})
	}
}
