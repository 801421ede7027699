package topology

import (
	"flag"
	"testing"
	"time"
)

var (
	simSchedules = flag.Int("sim.schedules", 1500, "simulated fault schedules to run")
	simSteps     = flag.Int("sim.steps", 300, "steps of faults per schedule (a repair and 400 quiet steps follow)")
	simSeed      = flag.Int64("sim.seed", 1, "the first schedule's seed; schedule i uses seed+i")
)

// TestSimulation drives the core through seeded random fault histories
// against the model of streaming replication, checking the invariants
// after every event; a failure prints its seed and a shrunk schedule.
// make sim-soak runs many more.
func TestSimulation(t *testing.T) {
	start := time.Now()
	steps, events := 0, 0
	for i := 0; i < *simSchedules; i++ {
		seed := *simSeed + int64(i)
		cfg, ops := randomConfig(seed, *simSteps)
		s, err := play(seed, cfg, ops)
		steps += cfg.steps + 400
		events += len(s.trace)
		if err != nil {
			f := shrink(&failure{seed: seed, cfg: cfg, ops: ops, err: err, tail: tail(s.trace, 40)})
			t.Fatalf("invariant broken: %s\nrerun: go test ./hasql/internal/topology -run TestSimulation -sim.seed %d -sim.schedules 1", f, seed)
		}
	}
	el := time.Since(start)
	t.Logf("%d schedules, %d steps, %d core events in %s: %.0f steps/s", *simSchedules, steps, events, el.Round(time.Millisecond), float64(steps)/el.Seconds())
}
