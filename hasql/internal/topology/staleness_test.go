package topology

import (
	"flag"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

var staleSchedules = flag.Int("stale.schedules", 1000, "schedules for TestTruthStaleness")

// staleBound is how long the view may show a replica that does not follow
// the master (in the model's truth) as a replica, or one that is not
// synchronous as sync, with checks interval apart: a master's walsenders
// are read when the next check would find them more than ReplicasMaxAge
// old (give or take an eighth of the interval), and the view keeps a
// check's answer until the next; at intervals longer than that, every
// check reads them. 500 ms more for the checks' own time.
func staleBound(interval time.Duration) time.Duration {
	return max(ReplicasMaxAge+interval/8, interval) + 500*time.Millisecond
}

// hangBound is how long the view may show a hung replica (in the model's
// truth) as one that serves reads when no other replica can: until the
// check after the hang times out, and the one at once after it too (the
// model's checks time out after 800 ms). 500 ms more for the checks' own
// time.
func hangBound(interval time.Duration) time.Duration {
	return interval + 2*800*time.Millisecond + 500*time.Millisecond
}

// staleIntervals are the check intervals TestTruthStaleness runs at, one
// schedule each in turn: the default, and intervals at which a list the
// next check would find too old used to be reused once more.
var staleIntervals = []time.Duration{500 * time.Millisecond, time.Second, 1500 * time.Millisecond, 1900 * time.Millisecond}

// modelFollows reports whether srv streams from m, directly or through a
// chain of replicas, in the model.
func modelFollows(md *model, srv, m *server) bool {
	s := srv
	for i := 0; i < 12; i++ {
		if !s.recovery || s.upstream < 0 || s.rogue || s.foreign {
			return false
		}
		u := md.servers[s.upstream]
		if !canStream(s, u) {
			return false
		}
		if u == m {
			return true
		}
		s = u
	}
	return false
}

// staleTrack measures, along a schedule, for how long the view was wrong
// about each replica against the model's truth: serving reads while it
// does not follow the master, or claimed sync while it is not.
type staleTrack struct {
	since map[string]time.Time
	max   map[string]time.Duration
	maxAt map[string]string
	seed  int64
}

func (st *staleTrack) observe(s *sim) {
	now := s.now
	wrong := map[string]bool{}
	e := s.core.Elected()
	if e.Master != nil && !e.Master.Partial {
		mmb := s.member(e.Master.ID)
		mt := s.md.servers[mmb.server]
		if mt == s.md.master() && !mt.hung && !mt.down {
			// A suspect replica (its last check timed out) gets no reads
			// while one that is not suspect qualifies (for SyncOnly, a
			// sync one): it is wrong only while it may serve them. Else
			// the view's being wrong about it lasts until a second timeout
			// puts it down, which is how long a hang takes to tell, not
			// staleness.
			healthy, healthySync := false, false
			for _, x := range s.core.Nodes() {
				if x.AliasOf == nil && x.Role.IsReplica() && !x.Suspect {
					healthy, healthySync = true, healthySync || x.Role == RoleSyncReplica
				}
			}
			for _, x := range s.core.Nodes() {
				mb := s.member(x.ID)
				if mb == nil || mb.gone || x.AliasOf != nil || !x.Role.IsReplica() {
					continue
				}
				srv := s.md.servers[mb.server]
				if srv.rogue || srv.foreign {
					continue
				}
				if !modelFollows(s.md, srv, mt) && !(x.Suspect && healthy) {
					if srv.hung {
						// Its checks must time out twice to tell (see
						// hangBound): a suspect replica still serves
						// reads when no other can.
						wrong[fmt.Sprintf("hung/%d", x.ID)] = true
					} else {
						wrong[fmt.Sprintf("follow/%d", x.ID)] = true
					}
				}
				if x.Role == RoleSyncReplica && !(x.Suspect && healthySync) && !(srv.upstream == mt.idx && canStream(srv, mt) && s.md.syncState(mt, srv) == "sync") {
					if srv.hung {
						// The master's walsender may outlive the hang
						// (see server.linger) and keep its sync place:
						// only the checks' timeouts tell, as above.
						wrong[fmt.Sprintf("hung/%d", x.ID)] = true
					} else {
						wrong[fmt.Sprintf("sync/%d", x.ID)] = true
					}
				}
			}
		}
	}
	for k := range wrong {
		if _, ok := st.since[k]; !ok {
			st.since[k] = now
		}
	}
	for k, t := range st.since {
		if !wrong[k] {
			st.record(k, now.Sub(t), s)
			delete(st.since, k)
		}
	}
}

func (st *staleTrack) record(k string, d time.Duration, s *sim) {
	kind, _, _ := strings.Cut(k, "/")
	if d > st.max[kind] {
		st.max[kind] = d
		st.maxAt[kind] = fmt.Sprintf("seed %d %s until %dms", st.seed, k, s.now.Sub(time.Unix(1_700_000_000, 0)).Milliseconds())
	}
}

// runTracked is sim.run with st observing after every step; what is still
// wrong at the end counts up to then.
func runTracked(s *sim, ops []op, st *staleTrack) error {
	s.observe = func() { st.observe(s) }
	err := s.run(ops)
	for k, t := range st.since {
		st.record(k, s.now.Sub(t), s)
	}
	return err
}

// TestTruthStaleness holds the view to the model's truth, which the
// invariants of check do not (they judge the view by the evidence it had):
// a replica that stopped following the master stops serving reads, and a
// replica that stopped being synchronous stops being claimed sync, within
// staleBound of the check interval, hangs, restarts and reused walsender
// lists included.
func TestTruthStaleness(t *testing.T) {
	all := map[string][]time.Duration{} // by kind and interval
	worst := map[string]string{}
	worstD := map[string]time.Duration{}
	bound := map[string]time.Duration{}
	for i := 0; i < *staleSchedules; i++ {
		seed := *simSeed + int64(i)
		cfg, ops := randomConfig(seed, *simSteps)
		cfg.interval = staleIntervals[i%len(staleIntervals)]
		if (i/len(staleIntervals))%2 == 1 {
			// A standby outside the set comes and goes, under the name
			// synchronous_standby_names lists first: no check of a node
			// of the set shows it.
			cfg.stranger = true
			if (i/(4*len(staleIntervals)))%2 == 1 {
				// On the machine of a replica of the set (a backup's
				// pg_receivewal beside a standby): the master's row from
				// that replica's address is the stranger's, under its own
				// name, whether or not the replica streams.
				cfg.strangerHost = 1 + (i/(8*len(staleIntervals)))%cfg.replicas
			}
			if (i/(2*len(staleIntervals)))%2 == 1 {
				// No other fault (nothing but age has the walsenders read),
				// and FIRST k, under which the stranger takes a sync place.
				// Longer: the stranger comes and goes a few times.
				ops, cfg.any, cfg.syncK = nil, false, max(cfg.syncK, 1)
				cfg.steps = 4 * cfg.steps
			}
			for at := 20 + i%100; at < cfg.steps; at += 200 + (i*37)%150 {
				ops = append(ops, op{at: at, kind: opStranger})
			}
			slices.SortStableFunc(ops, func(a, b op) int { return a.at - b.at })
		}
		s := newSim(cfg, seed, nil)
		st := &staleTrack{since: map[string]time.Time{}, max: map[string]time.Duration{}, maxAt: map[string]string{}, seed: seed}
		if err := runTracked(s, ops, st); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}

		for kind, d := range st.max {
			k := fmt.Sprintf("%s at %s", kind, cfg.interval)
			bound[k] = staleBound(cfg.interval)
			if kind == "hung" {
				bound[k] = hangBound(cfg.interval)
			}
			all[k] = append(all[k], d)
			if d > worstD[k] {
				worstD[k], worst[k] = d, st.maxAt[kind]
			}
		}
	}
	for k, ds := range all {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		p := func(q float64) time.Duration { return ds[int(q*float64(len(ds)-1))] }
		t.Logf("%s: %d schedules: p50 %s, p90 %s, p99 %s, max %s (%s)", k, len(ds), p(.5), p(.9), p(.99), ds[len(ds)-1], worst[k])
		if ds[len(ds)-1] > bound[k] {
			t.Errorf("%s: the view was wrong for %s, more than %s: %s", k, ds[len(ds)-1], bound[k], worst[k])
		}
	}
	if len(all) == 0 {
		t.Fatal("the view was never wrong: the tracker saw nothing")
	}
}
