package hasql

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgxha/pgxha/checker"
	"github.com/pgxha/pgxha/hasql/internal/topology"
)

// The shell around the decision core (internal/topology): report,
// promotionSeen, ForgetTimeline and the node set feed it events under m.mu;
// apply carries out what it decided, in its order: connections cut first,
// then the routing snapshot published (so that a snapshot naming a new
// master never exists while connections to the old one are open), then
// pools reset, logs, telemetry and checks hurried, once m.mu is released.

// afterReport is what the core decided that is done once m.mu is
// released: resetting pools does I/O.
type afterReport struct {
	reset   []*node // reset the pool: the node is down or no longer master
	cut     []*node // connections in flight were closed (for the log)
	cutN    []int
	trigger bool // check every node now (fast checking began)
	refresh bool // a node went down: ask the discoverer to look again
}

// report records a check of n that began at began and rebuilds the routing
// view. It returns true when n must be checked again at once (a first
// timeout, to confirm).
func (m *Manager) report(n *node, res checker.Result, began time.Time, latency time.Duration, err error) (again bool) {
	if n.removed.Load() {
		return false // out of the set: its view no longer matters
	}
	ended := began.Add(latency)
	m.tel.refreshTimed()
	m.tel.checked(n, latency, err)
	early := 0 // connections to another server, closed
	m.mu.Lock()
	n.checkLatency = latency // the last check's, failed or not (NodeStatus.CheckLatency)
	if err == nil {
		// A checker that does not read the start time leaves the pool's
		// connections nothing to be compared with (see sameServer).
		if start := startMicro(res.StartTime); start != 0 {
			if prev := n.serverStart.Swap(start); prev != start {
				// The first check (connections opened before it were
				// compared with nothing), another server, or this one
				// restarted: the connections to another server go,
				// before the view that follows is published.
				early = n.serverChanged(start, prev == 0)
			}
		}
		n.serverTL.Store(res.Timeline)
		n.tlHidden.Store(res.InRecovery && res.ReceiveTimeline == 0)
		n.serverSys.Store(res.SystemID)
		m.core.CheckOK(n.id(), res, began, ended, n.remoteIP)
		n.latencyEWMA.Store(int64(n.cv.EWMA))
	} else {
		again = m.core.CheckFailed(n.id(), err, isTimeout(err), ended)
	}
	n.suspect.Store(n.cv.Suspect)
	n.watchable.Store(n.cv.Up && n.cv.Res.InRecovery)
	after := m.applyLocked(nil)
	close(n.reported)
	n.reported = make(chan struct{})
	m.mu.Unlock()
	if early > 0 {
		m.log.Warn("pgxha: connections to another server than the one the node's check reaches now: closed",
			"addr", n.cfg.Addr, "closed", early)
	}
	m.finish(n, &after)
	return again
}

// promotionSeen records what n's promotion watcher saw: n left recovery
// (see topology.Core.PromotionSeen). (The watcher reads
// default_transaction_read_only as the server's configuration was when its
// statement began: a node made read-only by a reload during that statement
// is taken for writable until the check, a round trip later, corrects it.)
func (m *Manager) promotionSeen(n *node, p checker.Promotion) {
	m.mu.Lock()
	m.core.PromotionSeen(n.id(), p, time.Now())
	n.watchable.Store(false)
	after := m.applyLocked(nil)
	m.mu.Unlock()
	m.finish(n, &after)
}

// ForgetTimeline makes the Manager forget the highest timeline it has seen
// and the cluster it belongs to (unless pinned with WithSystemIdentifier),
// and derive both again from what the nodes report now. It is the
// operator's way out of a stale master that is to become master again
// although a newer timeline existed: the writes made on that timeline are
// given up. Replicas that have WAL the writable nodes lack stop counting
// against them too, until a master is elected on a newer timeline; they
// stay detached (no reads) until they follow the master. The usual way out
// is to rewind the stale node (pg_rewind) and let it rejoin as a replica of
// the current master, or to promote a replica that has the newest
// timeline.
func (m *Manager) ForgetTimeline() {
	m.mu.Lock()
	m.core.ForgetTimeline(time.Now())
	after := m.applyLocked(nil)
	m.mu.Unlock()
	m.finish(nil, &after)
}

// masterless returns old without its master, for the snapshot stored while
// the master's connections are cut (see applyLocked): the master leaves
// every set, the read sets too (MasterReadWeight), so that a read does not
// pick it there either.
func (m *Manager) masterless(old *snapshot) *snapshot {
	interim := *old
	interim.changed = make(chan struct{})
	interim.master = nil
	gone := []*node{old.master}
	for i := range interim.sets {
		interim.sets[i] = without(m, interim.sets[i], gone)
	}
	return &interim
}

// applyLocked carries out what the core decided that must happen under
// m.mu, in its order: the connections in flight on the nodes it cuts are
// closed, the nodes' live values are published, the routing snapshot is
// swapped; logs and telemetry follow. gone are nodes that left the set in
// this event (their cuts are the core's too). The rest is returned for
// finish. Caller must hold m.mu.
func (m *Manager) applyLocked(gone []*node) afterReport {
	r := m.core.TakeReady()
	var after afterReport
	lookup := func(id topology.ID) *node {
		if x := m.byID[id]; x != nil {
			return x
		}
		for _, x := range gone {
			if x.id() == id {
				return x
			}
		}
		return nil
	}
	if old := m.snap.Load(); old.master != nil && !old.closed && slices.Contains(r.Cut, old.master.id()) {
		// The master's connections are cut: first a snapshot with no
		// master, so that an acquire that loaded the old one and dials a
		// connection after the cut fails its re-validation (the snapshot
		// changed) instead of passing it before the next one is stored.
		m.snap.Store(m.masterless(old))
		close(old.changed)
		m.routingKey = nil // the next snapshot is built afresh
	}
	for _, id := range r.Cut {
		if x := lookup(id); x != nil {
			after.cut = append(after.cut, x)
			after.cutN = append(after.cutN, x.sever())
		}
	}
	for _, id := range r.Reset {
		if x := lookup(id); x != nil {
			after.reset = append(after.reset, x)
		}
	}
	if r.All {
		for _, x := range m.nodes {
			x.publishLocked()
		}
	} else {
		for _, id := range r.Derived {
			if x := m.byID[id]; x != nil {
				x.publishLocked()
			}
		}
	}
	e := m.core.Elected()
	var master *node
	if e.Master != nil {
		master = m.byID[e.Master.ID]
	}
	needFast := r.Fast || master != nil && master.slow.Load()
	if needFast {
		if m.fastSince.Load() == 0 {
			m.fastSince.Store(time.Now().UnixNano())
			after.trigger = true
		}
	} else {
		m.fastSince.Store(0)
	}
	after.refresh = r.Refresh
	var masterErr error
	var staleErr *StaleMasterError
	switch {
	case len(e.SplitBrain) > 1:
		masterErr = &SplitBrainError{Addrs: e.SplitBrain, Timeline: e.Timeline}
	case len(e.Stale) > 0:
		// No master but stale ones: acquires wait for one, as with no
		// master at all (a promotion under way is about to end it), and
		// their error says why when they give up.
		staleErr = &StaleMasterError{Nodes: e.Stale, Timeline: e.Timeline, Behind: e.StaleBehind, BehindMoved: e.StaleMoved}
	}
	m.swapSnapshotLocked(master, masterErr, staleErr)

	ctx := context.Background()
	for _, l := range r.Logs {
		m.log.Log(ctx, l.Level, l.Msg, l.Attrs...)
	}
	for _, rc := range r.RoleChanges {
		if x := lookup(rc.ID); x != nil {
			m.tel.roleChanged(x, Role(rc.From), Role(rc.To))
			if rc.Failover {
				m.tel.failover(x)
			}
		}
	}
	if r.SplitBrainChanged {
		m.tel.splitBrain(r.SplitBrain)
	}
	return after
}

// publishLocked stores what acquires read lock-free of the node's view.
// Caller must hold m.mu.
func (n *node) publishLocked() {
	v := n.cv
	role := Role(v.Role)
	n.replayLSN.Store(uint64(v.Res.LSN))
	n.probedLSN.Store(0)
	// A master's lag is 0 and known (balancer.Node): least_lag weighs it
	// with the replicas when it takes reads (MasterReadWeight).
	lagBytes, lag, known := v.LagBytes, v.Lag, v.LagKnown && role.IsReplica()
	if role == RoleMaster {
		lagBytes, lag, known = 0, 0, true
	}
	n.lagBytes.Store(lagBytes)
	n.lagNanos.Store(int64(lag))
	n.lagKnown.Store(known)
	if v.Checked && !v.Partial && v.Res.InRecovery && !v.CheckBegan.IsZero() {
		n.inRecoveryBegan.Store(v.CheckBegan.UnixNano())
	}
	n.sync.Store(role == RoleSyncReplica)
	n.mayWrite.Store(v.Writable)
	n.replica.Store(role.IsReplica())
	n.damped.Store(v.Damped)
}

// flushTrace writes out the decision trace recorded so far, in order.
func (m *Manager) flushTrace() {
	w := m.cfg.DecisionTrace
	if w == nil {
		return
	}
	m.traceMu.Lock()
	defer m.traceMu.Unlock()
	m.mu.Lock()
	b := bytes.Clone(m.traceBuf.Bytes())
	m.traceBuf.Reset()
	failed := m.traceErr != nil
	m.mu.Unlock()
	if len(b) == 0 || failed {
		return
	}
	if _, err := w.Write(b); err != nil {
		m.log.Warn("pgxha: the decision trace cannot be written; no more is written", "err", err)
		m.mu.Lock()
		m.traceErr = err
		m.mu.Unlock()
	}
}

// finish does what the core decided once m.mu is released.
func (m *Manager) finish(n *node, after *afterReport) {
	m.flushTrace()
	for _, x := range after.reset {
		x.pool.Reset()
	}
	for i, x := range after.cut {
		if k := after.cutN[i]; k > 0 {
			m.log.Info("pgxha: closed connections in flight", "addr", x.cfg.Addr, "count", k)
		}
	}
	if after.refresh {
		m.refreshDiscovery()
	}
	if after.trigger {
		for _, x := range m.nodesNow() {
			if x != n {
				x.hurry()
			}
		}
	}
}

// swapSnapshotLocked builds a new snapshot when routing changed.
// Caller must hold m.mu.
func (m *Manager) swapSnapshotLocked(master *node, masterErr error, staleErr *StaleMasterError) {
	key := make([]routingEntry, len(m.nodes))
	for i, x := range m.nodes {
		v := x.cv
		role := Role(v.Role)
		key[i] = routingEntry{
			node:      x,
			role:      role,
			lastSync:  master == nil && role == RoleReplica && v.SyncState == "sync",
			up:        v.Up,
			suspect:   v.Suspect,
			damped:    v.Damped,
			eligible:  role.IsReplica() && x.withinLag(m.cfg.MaxLagBytes, m.cfg.MaxLag) && !x.noLoadBalance() && !v.Damped,
			latencyMS: latencyBucket(v.EWMA),
			lag:       lagBucket(v.LagBytes, v.Lag, v.LagKnown && role.IsReplica()),
			tags:      x.tags.Load(),
		}
	}
	old := m.snap.Load()
	if old.closed {
		return
	}
	tl := m.core.Timeline()
	if slices.Equal(key, m.routingKey) && old.master == master && sameErr(old.masterErr, masterErr) && sameStale(old.staleErr, staleErr) && old.timeline == tl {
		return
	}
	m.routingKey = key

	s := &snapshot{changed: make(chan struct{}), master: master, masterErr: masterErr, staleErr: staleErr, timeline: tl}
	if master != nil {
		s.sets[setMaster] = m.buildSet([]*node{master}, nil)
	}
	var all, plain, suspects, syncs, lastSyncs []*node
	for i, x := range m.nodes {
		if !key[i].role.IsReplica() || x.noLoadBalance() {
			continue
		}
		all = append(all, x)
		if !key[i].eligible {
			continue
		}
		if key[i].suspect {
			suspects = append(suspects, x)
			continue
		}
		plain = append(plain, x)
		switch {
		case key[i].role == RoleSyncReplica:
			syncs = append(syncs, x)
		case key[i].lastSync:
			lastSyncs = append(lastSyncs, x)
		}
	}
	if len(plain) == 0 {
		plain = suspects // a suspect replica beats none
	}
	if z := m.cfg.Zone; z != "" {
		plain, syncs, lastSyncs = inZone(plain, z), inZone(syncs, z), inZone(lastSyncs, z)
	}
	s.sets[setAllReplicas] = m.buildSet(all, nil)
	s.sets[setSync] = m.buildSet(syncs, nil)
	s.sets[setLastSync] = m.buildSet(lastSyncs, nil)
	if master != nil && m.cfg.MasterReadWeight > 0 {
		mixed := append(slices.Clone(plain), master)
		s.sets[setReplicas] = m.buildSet(mixed, func(x *node) float64 {
			if x == master {
				return x.cfg.Weight * m.cfg.MasterReadWeight
			}
			return x.cfg.Weight
		})
	} else {
		s.sets[setReplicas] = m.buildSet(plain, nil)
	}
	m.snap.Store(s)
	if old.master != master {
		// A new master may be on another timeline of the same number.
		// After the store: a history read through the old snapshot began
		// before this and is not kept.
		m.histories.forget()
	}
	close(old.changed)
}

func sameStale(a, b *StaleMasterError) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Error() == b.Error()
}

func sameErr(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Error() == b.Error()
}

// latencyBucket rounds a latency so that small changes do not rebuild the
// snapshot: buckets grow by powers of two from 100µs.
func latencyBucket(d time.Duration) int64 {
	b := int64(0)
	for t := 100 * time.Microsecond; d > t && b < 30; t *= 2 {
		b++
	}
	return b
}

// lagBucket buckets a replica's lag for lag-aware balancers, which read it
// when their picker is built: it changes when the lag passes 1 MiB or
// 100 ms, and each doubling beyond, so that a replica falling behind
// rebuilds the pickers a few times, not at every check. -1: unknown.
func lagBucket(bytes int64, d time.Duration, known bool) int64 {
	if !known {
		return -1
	}
	b, c := int64(0), int64(0)
	for t := int64(1 << 20); bytes > t && b < 40; t *= 2 {
		b++
	}
	for t := 100 * time.Millisecond; d > t && c < 40; t *= 2 {
		c++
	}
	return b<<8 | c
}

// interval is the time until a node's next check.
func (m *Manager) interval() time.Duration {
	fs := m.fastSince.Load()
	if fs == 0 {
		return m.cfg.CheckInterval
	}
	elapsed := time.Since(time.Unix(0, fs))
	if elapsed < m.cfg.FastCheckWindow {
		return m.cfg.FastCheckInterval
	}
	// Back off to the normal interval, doubling every second.
	d := m.cfg.FastCheckInterval
	for s := time.Duration(0); s <= elapsed-m.cfg.FastCheckWindow && d < m.cfg.CheckInterval; s += time.Second {
		d *= 2
	}
	return min(d, m.cfg.CheckInterval)
}

// untilTick returns how long a node that was just checked waits before its
// next check at interval d: until the next multiple of d since the Manager
// started (see topology.UntilTick).
func (m *Manager) untilTick(d time.Duration) time.Duration {
	return topology.UntilTick(time.Since(m.epoch), d)
}

// slowThreshold is how long a master's check may take before the others are
// checked fast.
func (m *Manager) slowThreshold(n *node) time.Duration {
	d := max(4*m.cfg.FastCheckInterval, 8*time.Duration(n.latencyEWMA.Load()))
	return min(d, m.cfg.CheckTimeout/2)
}

// masterSlow starts fast checks of the other nodes while n, the master,
// takes long to answer.
func (m *Manager) masterSlow(n *node) {
	if m.snap.Load().master != n || m.fastSince.Load() != 0 || m.ctx.Err() != nil {
		return
	}
	if m.fastSince.CompareAndSwap(0, time.Now().UnixNano()) {
		m.log.Debug("pgxha: master check slow; checking the others fast", "addr", n.cfg.Addr)
		for _, x := range m.nodesNow() {
			if x != n {
				x.hurry()
			}
		}
	}
}

// isTimeout reports a check that ran out of time, as opposed to one that
// was refused or failed: only a timeout needs a confirmation.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
