package topology

import (
	"math/rand"
	"testing"
	"time"
)

// A writable node checked as the shell schedules its checks (UntilTick
// after each), whose checks take anything up to nearly the interval, never
// has a check begin while the walsenders it uses are older than WantReplicas
// promises: ReplicasMaxAge, give or take an eighth of the interval, or the
// interval where every check reads them. A tick less than a quarter
// interval away used to be skipped: after a check slower than three
// quarters of the interval the next came up to two intervals after it
// began, with a list 2.5 s old at 500 ms, 3 s at 1.5 s.
func TestReusedWalsendersAgeOnTheShellSchedule(t *testing.T) {
	for _, d := range []time.Duration{20 * time.Millisecond, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond, 1900 * time.Millisecond, 5 * time.Second} {
		bound := max(ReplicasMaxAge+d/8, d)
		var worst time.Duration
		reads, reuses := 0, 0
		for seed := int64(0); seed < 200; seed++ {
			rng := rand.New(rand.NewSource(seed))
			c := New(Config{})
			c.SetMembers(t0, members(1))
			var read time.Time // when the check that last read them began
			b := t0
			for i := 0; i < 200; i++ {
				if !read.IsZero() {
					if age := b.Sub(read); age > bound {
						t.Fatalf("interval %s, seed %d, check %d: began with walsenders %s old, more than %s", d, seed, i, age, bound)
					} else if age > worst {
						worst = age
					}
				}
				want := c.WantReplicas(1, b, d)
				if want {
					read = b
					reads++
				} else {
					reuses++
				}
				res := master(1, 100)
				res.ReplicasCached = !want
				// Mostly quick, now and then nearly the interval.
				lat := time.Millisecond + time.Duration(rng.Int63n(int64(d/20)))
				if rng.Intn(4) == 0 {
					lat = time.Duration(rng.Int63n(int64(d * 19 / 20)))
				}
				e := b.Add(lat)
				c.CheckOK(1, res, b, e, "10.0.0.1")
				b = e.Add(UntilTick(e.Sub(t0), d))
			}
		}
		if reuses == 0 && d < ReplicasMaxAge/2 {
			t.Fatalf("interval %s: no check reused the walsenders", d)
		}
		t.Logf("interval %s: %d reads, %d reuses, oldest list a check began with %s (bound %s)", d, reads, reuses, worst, bound)
	}
}
