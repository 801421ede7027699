package balancer_test

import (
	"strconv"
	"testing"
)

var benchSizes = []int{2, 8, 64}

// BenchmarkPick measures Pick over nodes of equal weight, the common case of
// a set of replicas.
func BenchmarkPick(b *testing.B) {
	benchPick(b, false)
}

// BenchmarkPickWeighted measures Pick over nodes of unequal weight, which
// selects the weighted code paths of round_robin and weighted.
func BenchmarkPickWeighted(b *testing.B) {
	benchPick(b, true)
}

func benchPick(b *testing.B, weighted bool) {
	for _, bl := range policies {
		b.Run(bl.Name(), func(b *testing.B) {
			for _, n := range benchSizes {
				b.Run(strconv.Itoa(n), func(b *testing.B) {
					p := bl.Build(benchNodes(n, weighted))
					b.ReportAllocs()
					s := 0
					for b.Loop() {
						s += p.Pick()
					}
					sink = s
				})
			}
		})
	}
}

// BenchmarkPickParallel measures Pick called from GOMAXPROCS goroutines at
// once, over nodes of equal weight.
func BenchmarkPickParallel(b *testing.B) {
	for _, bl := range policies {
		b.Run(bl.Name(), func(b *testing.B) {
			for _, n := range benchSizes {
				b.Run(strconv.Itoa(n), func(b *testing.B) {
					p := bl.Build(benchNodes(n, false))
					b.ReportAllocs()
					b.RunParallel(func(pb *testing.PB) {
						s := 0
						for pb.Next() {
							s += p.Pick()
						}
						if s < 0 {
							sink = s
						}
					})
				})
			}
		})
	}
}

// BenchmarkBuild measures Build, which runs off the hot path whenever the
// cluster changes.
func BenchmarkBuild(b *testing.B) {
	for _, bl := range policies {
		b.Run(bl.Name(), func(b *testing.B) {
			for _, n := range benchSizes {
				b.Run(strconv.Itoa(n), func(b *testing.B) {
					nodes := benchNodes(n, true)
					b.ReportAllocs()
					for b.Loop() {
						bl.Build(nodes)
					}
				})
			}
		})
	}
}
