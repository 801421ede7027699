package discovery_test

import (
	"math"
	"testing"
	"time"

	"github.com/pgxha/pgxha/discovery"
)

// TestJitterStaysWithinTenPercentAndPositive: the wait between looks is
// the interval give or take 10%, and never wraps to a negative wait (which
// would look again at once), up to the longest Interval a config may hold
// (hasql_discovery_interval=2562047h).
func TestJitterStaysWithinTenPercentAndPositive(t *testing.T) {
	for _, d := range []time.Duration{time.Nanosecond, time.Second, 2562047 * time.Hour, math.MaxInt64 / 2, math.MaxInt64} {
		for range 1000 {
			j := discovery.Jitter(d)
			lo := d - d/10 - 1
			if j <= 0 || j < lo || float64(j) > float64(d)*1.1+1 {
				t.Fatalf("jitter(%s) = %s: want a positive wait within 10%% of it", d, j)
			}
		}
	}
}
