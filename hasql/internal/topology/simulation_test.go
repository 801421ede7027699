package topology

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var (
	simSchedules  = flag.Int("sim.schedules", 1500, "simulated fault schedules to run")
	simSteps      = flag.Int("sim.steps", 300, "steps of faults per schedule (a repair and 400 quiet steps follow)")
	simSeed       = flag.Int64("sim.seed", 1, "the first schedule's seed; schedule i uses seed+i")
	roleSchedules = flag.Int("role.schedules", 300, "schedules for TestSimulationReplicationRoleCheckUser")
	nameSchedules = flag.Int("names.schedules", 300, "schedules for TestSimulationMemberNames")
)

// TestSimulation drives the core through seeded random fault histories
// against the model of streaming replication, checking the invariants
// after every event; a failure prints its seed and a shrunk schedule.
// make sim-soak runs many more.
func TestSimulation(t *testing.T) {
	start := time.Now()
	steps, events, cached := 0, 0, 0
	for i := 0; i < *simSchedules; i++ {
		seed := *simSeed + int64(i)
		cfg, ops := randomConfig(seed, *simSteps)
		s, err := play(seed, cfg, ops)
		steps += cfg.steps + 400
		events += len(s.trace)
		cached += s.cachedChecks
		if err != nil {
			f := shrink(&failure{seed: seed, cfg: cfg, ops: ops, err: err, tail: tail(s.trace, 40)})
			t.Fatalf("invariant broken: %s\nrerun: go test ./hasql/internal/topology -run TestSimulation -sim.seed %d -sim.schedules 1", f, seed)
		}
	}
	el := time.Since(start)
	if t.Failed() {
		return
	}
	if cached == 0 {
		t.Fatal("no check reused a master's walsenders: the checker's caching went untested")
	}
	t.Logf("%d schedules, %d steps, %d core events (%d checks reused a master's walsenders) in %s: %.0f steps/s",
		*simSchedules, steps, events, cached, el.Round(time.Millisecond), float64(steps)/el.Seconds())
}

// TestSimulationReplicationRoleCheckUser runs schedules whose check user
// is the replication role itself (see model.roleUser): the walsenders'
// names and addresses show, nothing else of them nor of the replicas'
// walreceivers but whether one runs. In half of them a standby outside
// the set (a backup's pg_receivewal) streams from the master as the same
// role from a replica's machine, under a name of its own, coming and
// going: its row is never a replica's. Besides the invariants, the view
// is held to the model's truth as in TestTruthStaleness: a replica that
// streams from nobody stops serving reads within staleBound.
func TestSimulationReplicationRoleCheckUser(t *testing.T) {
	// Seed 14676 found a replica whose walreceiver had stopped taken for
	// the stranger's row from its machine (followed for 2.7 s and on);
	// seed 411013616 a rogue that listed a replica by its name, which took
	// the replica's rows at the master away and with them its proof
	// against a stale server (elected with the rogues' answers only).
	seeds := []int64{14676, 411013616}
	runTrackedSeeds(t, "TestSimulationReplicationRoleCheckUser -sim.seed %d -role.schedules 1", seeds, *roleSchedules, roleUserConfig)
}

// TestSimulationMemberNames runs schedules in which the source names
// members (see opNameMember) now and then, as Patroni names its members:
// a name given in place to a member the core has checked, a name that
// moved with opMoveName (the source behind), a name dropped. Besides the
// invariants, the view is held to the model's truth as in
// TestTruthStaleness.
func TestSimulationMemberNames(t *testing.T) {
	// Seed 91 found the master's address yielding to another of its
	// server when the source named it; 621024383 a vouched member whose
	// source name was behind taking the sync row of that name.
	seeds := []int64{91, 621024383}
	runTrackedSeeds(t, "TestSimulationMemberNames -sim.seed %d -names.schedules 1", seeds, *nameSchedules, memberNamesConfig)
}

// runTrackedSeeds plays the schedule config gives for each of seeds and of
// schedules more from -sim.seed, checking the invariants and holding the
// view to the model's truth at 500 ms (see TestTruthStaleness); rerun,
// with the seed, is what a failure says to run again.
func runTrackedSeeds(t *testing.T, rerun string, seeds []int64, schedules int, config func(seed int64) (simConfig, []op)) {
	t.Helper()
	found := len(seeds)
	for i := 0; i < schedules; i++ {
		seeds = append(seeds, *simSeed+int64(i))
	}
	steps := 0
	worst := map[string]time.Duration{}
	for i, seed := range seeds {
		cfg, ops := config(seed)
		if i < found {
			cfg.linger = 0 // as they were found
		}
		s := newSim(cfg, seed, nil)
		st := &staleTrack{since: map[string]time.Time{}, max: map[string]time.Duration{}, maxAt: map[string]string{}, seed: seed}
		err := runTracked(s, ops, st)
		steps += cfg.steps + 400
		again := "rerun: go test ./hasql/internal/topology -run " + fmt.Sprintf(rerun, seed)
		if err != nil {
			f := shrink(&failure{seed: seed, cfg: cfg, ops: ops, err: err, tail: tail(s.trace, 40)})
			t.Fatalf("invariant broken: %s\n%s", f, again)
		}
		for kind, d := range st.max {
			bound := staleBound(500 * time.Millisecond)
			if kind == "hung" {
				bound = hangBound(500 * time.Millisecond)
			}
			if d > bound {
				t.Fatalf("%s (%s): the view was wrong for %s, more than %s: %s\n%s", kind, cfg, d, bound, st.maxAt[kind], again)
			}
			worst[kind] = max(worst[kind], d)
		}
	}
	t.Logf("%d schedules, %d steps; the view behind the truth at most: %v", len(seeds), steps, worst)
}

// memberNamesConfig is randomConfig's schedule for seed with the source
// naming members every 20 to 80 steps.
func memberNamesConfig(seed int64) (simConfig, []op) {
	cfg, ops := randomConfig(seed, *simSteps)
	for at := 5 + int(seed%30); at < cfg.steps; at += 20 + int(seed*53%60) {
		ops = append(ops, op{at: at, kind: opNameMember, arg: int(seed*int64(at)) & 0xffff})
	}
	slices.SortStableFunc(ops, func(a, b op) int { return a.at - b.at })
	return cfg, ops
}

// roleUserConfig is randomConfig's schedule for seed with the
// replication role as the check user, and in even seeds the stranger on
// a replica's machine.
func roleUserConfig(seed int64) (simConfig, []op) {
	cfg, ops := randomConfig(seed, *simSteps)
	cfg.restricted, cfg.roleUser = false, true
	if seed%2 == 0 {
		cfg.stranger = true
		cfg.strangerHost = 1 + int(seed/2)%cfg.replicas
		for at := 20 + int(seed%100); at < cfg.steps; at += 200 + int(seed*37%150) {
			ops = append(ops, op{at: at, kind: opStranger})
		}
		slices.SortStableFunc(ops, func(a, b op) int { return a.at - b.at })
	}
	return cfg, ops
}

// TestSimulationSeedsThatFoundDefects replays, one schedule each, the
// seeds of long runs that stopped on a defect since fixed (see
// docs/decision-core.md): a WAL switch that left a healthy master stale
// for good (191050569); a writable copy of the master's identity at an
// address whose name then moved onto the master letting a server skip its
// first-writable-check wait (211035734, 7771905, 241016028); a stale
// server said behind the address that now reaches it (221099754); a
// server on the older timeline elected once discovery dropped the trusted
// replica that showed the newer one (404836); a replica whose upstream
// went down after its check showed it cascading, claimed sync from the
// master's older row (501016854, in 200 steps).
func TestSimulationSeedsThatFoundDefects(t *testing.T) {
	for _, c := range []struct {
		seed  int64
		steps int
	}{{191050569, 300}, {211035734, 300}, {7771905, 300}, {241016028, 300}, {221099754, 300}, {404836, 300}, {501016854, 200}} {
		seed := c.seed
		cfg, ops := randomConfig(seed, c.steps)
		cfg.linger = 0 // as they were found
		if _, err := play(seed, cfg, ops); err != nil {
			t.Errorf("seed %d: %v\nrerun: go test ./hasql/internal/topology -run TestSimulation -sim.seed %d -sim.schedules 1", seed, err, seed)
		}
	}
}

// TestReplaySimulated records simulated runs and replays them: the same
// events give the same decisions, byte for byte.
func TestReplaySimulated(t *testing.T) {
	for seed := int64(1); seed <= 40; seed++ {
		cfg, ops := randomConfig(seed, 300)
		var buf bytes.Buffer
		var werr error
		s := newSim(cfg, seed, WriteTrace(&buf, &werr))
		if err := s.run(ops); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if werr != nil {
			t.Fatal(werr)
		}
		n, err := Replay(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatalf("seed %d: replay of %d entries: %v", seed, n, err)
		}
		if n < 20 {
			t.Fatalf("seed %d: a trace of %d entries", seed, n)
		}
	}
}

// TestReplayFixtures replays the traces recorded from real clusters in
// unfriendly scenarios (testdata/*.jsonl; see hasql.WithDecisionTrace):
// the core still decides what it decided then.
func TestReplayFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no recorded traces in testdata")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			n, err := Replay(r)
			if err != nil {
				t.Fatalf("after %d entries: %v", n, err)
			}
			t.Logf("%d events, the same decisions", n)
		})
	}
}
