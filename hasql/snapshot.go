package hasql

import (
	"cmp"
	"slices"
	"time"

	"github.com/pgxha/pgxha/balancer"
)

// snapshot is the immutable routing view: who is master, which replicas
// qualify for each kind of read, and a Picker for each set. It is replaced
// whenever routing changes; changed is closed then, which wakes acquires
// waiting for a node.
type snapshot struct {
	changed chan struct{}
	closed  bool

	master    *node
	masterErr error             // a *SplitBrainError when writes are refused
	staleErr  *StaleMasterError // no master, but stale ones: said when an acquire gives up
	timeline  uint32            // the newest timeline the cluster's vouched nodes have shown (Core.Timeline)
	sets      [setCount]candidateSet
}

// The candidate sets every snapshot prepares.
const (
	setMaster      = iota // the master
	setReplicas           // replicas for a plain read: up, not suspect (unless all are), within the default lag limits; plus the master with MasterReadWeight
	setSync               // the sync replicas of setReplicas
	setLastSync           // with no master known, the replicas of setReplicas its last master listed as sync (PreferMaster's choice then)
	setAllReplicas        // every replica that is up, for custom options and WaitReady
	setCount
)

type candidateSet struct {
	nodes  []*node
	picker balancer.Picker
}

func (c *candidateSet) pick() int {
	if len(c.nodes) == 1 {
		return 0
	}
	return c.picker.Pick()
}

func (s *snapshot) set(i int) candidateSet { return s.sets[i] }

// buildSet makes a candidate set and its picker.
func (m *Manager) buildSet(nodes []*node, weight func(*node) float64) candidateSet {
	if len(nodes) == 0 {
		return candidateSet{}
	}
	bn := make([]balancer.Node, len(nodes))
	for i, n := range nodes {
		w := n.cfg.Weight
		if weight != nil {
			w = weight(n)
		}
		bn[i] = balancer.Node{
			Index:    n.index,
			Addr:     n.cfg.Addr,
			Weight:   w,
			Latency:  time.Duration(n.latencyEWMA.Load()),
			InUse:    &n.inUse,
			Tags:     n.tagMap(),
			LagBytes: n.lagBytes.Load(),
			Lag:      time.Duration(n.lagNanos.Load()),
			LagKnown: n.lagKnown.Load(),
		}
	}
	return candidateSet{nodes: nodes, picker: m.cfg.Balancer.Build(bn)}
}

// candidates returns the set an acquire for t with options o may pick from,
// minus excluded nodes. Plain acquires, and options that choose among the
// prepared sets (SyncOnly, PreferSync, FallbackToMaster), allocate nothing;
// options that filter by live values (MaxLag, MinLSN) and exclusions build a
// set of their own.
func (m *Manager) candidates(s *snapshot, t target, o *replicaOptions, excluded []*node) (candidateSet, error) {
	if t == targetMaster {
		if s.masterErr != nil {
			return candidateSet{}, s.masterErr
		}
		return without(m, s.set(setMaster), excluded), nil
	}
	var set candidateSet
	if o != nil && o.preferMaster && s.master != nil && s.masterErr == nil && !slices.Contains(excluded, s.master) {
		return s.set(setMaster), nil
	}
	switch {
	case o != nil && o.custom():
		set = m.customSet(s, o)
	case o != nil && o.preferMaster:
		set = s.set(s.preferMasterReplicas(o)) // the master, if any, failed: see above
	default:
		set = s.set(s.replicaSet(o))
	}
	set = without(m, set, excluded)
	if len(set.nodes) == 0 && s.fallsBack(o) && !slices.Contains(excluded, s.master) {
		return s.set(setMaster), nil
	}
	return set, nil
}

// replicaSet returns the prepared set of replicas for options that need no
// set of their own (nil, or not custom): the sync replicas with SyncOnly, or
// with PreferSync while there are any, otherwise the replicas.
func (s *snapshot) replicaSet(o *replicaOptions) int {
	if o != nil && o.preferMaster {
		if s.master != nil && s.masterErr == nil && len(s.sets[setMaster].nodes) > 0 {
			return setMaster
		}
		return s.preferMasterReplicas(o)
	}
	if o != nil && (o.syncOnly || o.preferSync && len(s.sets[setSync].nodes) > 0) {
		return setSync
	}
	return setReplicas
}

// preferMasterReplicas is PreferMaster's prepared set when the master
// cannot be had (there is none, or its pool just failed): the sync
// replicas within the lag limits (with SyncOnly, only they), else, while
// no master is known (and none is sync then), those the last master
// listed as sync, which had every commit it acknowledged when it was last
// seen, else the replicas within them. While no master is known no
// replica's lag is known, so under a lag limit there is none: the acquire
// waits for a master as AcquireMaster does.
func (s *snapshot) preferMasterReplicas(o *replicaOptions) int {
	switch {
	case o.syncOnly || len(s.sets[setSync].nodes) > 0:
		return setSync
	case len(s.sets[setLastSync].nodes) > 0:
		return setLastSync
	}
	return setReplicas
}

// fallsBack reports whether a replica acquire with options o that finds no
// replica takes the master instead.
func (s *snapshot) fallsBack(o *replicaOptions) bool {
	return o != nil && o.fallback && o.minLSN == 0 && s.master != nil && s.masterErr == nil
}

// without drops excluded nodes from set (building a new picker).
func without(m *Manager, set candidateSet, excluded []*node) candidateSet {
	if len(excluded) == 0 || len(set.nodes) == 0 {
		return set
	}
	var keep []*node
	for _, n := range set.nodes {
		if !slices.Contains(excluded, n) {
			keep = append(keep, n)
		}
	}
	if len(keep) == len(set.nodes) {
		return set
	}
	return m.buildSet(keep, nil)
}

// customSet filters the replicas by the live lag and LSN of each node.
func (m *Manager) customSet(s *snapshot, o *replicaOptions) candidateSet {
	maxBytes, maxLag := m.cfg.MaxLagBytes, m.cfg.MaxLag
	if o.lagSet {
		maxBytes, maxLag = o.maxLagBytes, o.maxLag
	}
	all := s.set(setAllReplicas).nodes
	keep := make([]*node, 0, len(all))
	var suspects []*node
	for _, n := range all {
		if o.syncOnly && !n.sync.Load() {
			continue
		}
		if !n.hasTags(o.tags) || n.damped.Load() || !o.ofSystem(n) {
			continue
		}
		if !n.withinLag(maxBytes, maxLag) {
			continue
		}
		if o.minLSN != 0 && (o.replayed(n) < o.minLSN || !o.notBehind(n, s)) {
			continue
		}
		if n.suspect.Load() {
			suspects = append(suspects, n)
			continue
		}
		keep = append(keep, n)
	}
	if len(keep) == 0 {
		keep = suspects
	}
	if z := cmp.Or(o.zone, m.cfg.Zone); z != "" {
		keep = inZone(keep, z)
	}
	if (o.preferSync || o.preferMaster) && !o.syncOnly {
		var syncs []*node
		for _, n := range keep {
			if n.sync.Load() {
				syncs = append(syncs, n)
			}
		}
		if len(syncs) > 0 {
			keep = syncs
		}
	}
	return m.buildSet(keep, nil)
}

// routingEntry is what of a node decides routing; a snapshot is rebuilt
// only when an entry changes.
type routingEntry struct {
	node      *node // the set itself changes when nodes join or leave
	role      Role
	lastSync  bool // no master known, and the last one listed it as sync (setLastSync)
	eligible  bool // in setReplicas
	up        bool
	suspect   bool
	damped    bool
	latencyMS int64              // bucketed, for latency-aware balancers
	lag       int64              // bucketed, for lag-aware balancers (see lagBucket)
	tags      *map[string]string // replaced, never changed, when the node's tags change
}

// behindTimeline reports whether n, a replica, may be on a branch the
// cluster does not have: the timeline it shows is older than the master's
// (without a master, than the newest a vouched node of the cluster has
// shown) and no walreceiver says what it streams. Such a replica serves
// plain reads (it follows the master as far as the checks can tell: listed
// by its walsenders), but no read after a position (MinLSN, After): one
// that replayed past the point where the newer timeline began is past the
// position by numbers while it lacks the write. It shows the newer
// timeline at its next restartpoint; with pg_monitor the check sees its
// walreceiver's at once, while it has one: once the master is gone, a
// replica that followed it shows its restartpoint's timeline again.
func (n *node) behindTimeline(s *snapshot) bool {
	if !n.tlHidden.Load() {
		return false
	}
	line := s.timeline
	if s.master != nil {
		line = max(line, s.master.serverTL.Load())
	}
	return n.serverTL.Load() < line
}
