package balancer

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestModulus(t *testing.T) {
	ns := []int{1, 2, 3, 5, 7, 8, 63, 64, 100, 641, 10000, 1 << 20, 6700417, math.MaxInt32, math.MaxUint32}
	xs := []uint64{0, 1, 2, 63, 64, 65, 1000, math.MaxUint16, 1 << 31, math.MaxUint32 - 1, math.MaxUint32}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		xs = append(xs, uint64(r.Uint32()))
	}
	for _, n := range ns {
		d := newModulus(n)
		for _, x := range xs {
			if got, want := d.of(x), int(x%uint64(n)); got != want {
				t.Fatalf("modulus %d of %d = %d, want %d", n, x, got, want)
			}
		}
		// Above 2^32 only the low 32 bits count.
		if got, want := d.of(1<<32+7), 7%n; got != want {
			t.Fatalf("modulus %d of 2^32+7 = %d, want %d", n, got, want)
		}
	}
}
