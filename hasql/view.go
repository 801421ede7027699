package hasql

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgxha/pgxha/checker"
)

// afterReport is what report decided to do once m.mu is released: resetting
// pools does I/O.
type afterReport struct {
	reset   []*node // reset the pool: the node is down or no longer master
	sever   []*node // and close its checked-out connections: hung or fenced
	trigger bool    // check every node now (fast checking began)
	refresh bool    // a node went down: ask the discoverer to look again
}

// report records a check of n and rebuilds the routing view. It returns true
// when n must be checked again at once (a first timeout, to confirm).
func (m *Manager) report(n *node, res checker.Result, latency time.Duration, err error) (again bool) {
	if n.removed.Load() {
		return false // out of the set: its view no longer matters
	}
	now := time.Now()
	m.tel.refreshTimed()
	m.tel.checked(n, latency, err)
	var after afterReport
	m.mu.Lock()
	v := &n.view
	wasChecked, wasUp := v.checked, v.up
	before := routedAs(v)
	v.checked, v.latency, v.remoteIP = true, latency, n.remoteIP
	if err == nil {
		v.up, v.suspect, v.timeouts = true, false, 0
		v.prevPos, v.prevPosTL, v.prevPosAt = v.pos, v.posTL, v.posAt
		v.pos, v.posTL, v.posAt, v.checkBegan = max(res.LSN, res.ReceiveLSN), bestTimeline(&res), now, now.Add(-latency)
		v.res, v.resAt = res, now
		n.serverStart.Store(res.StartTime.UnixMicro())
		v.lastErr, v.lastErrAt = nil, time.Time{}
		if v.ewma == 0 {
			v.ewma = latency
		} else {
			v.ewma = (v.ewma*7 + latency) / 8
		}
		n.latencyEWMA.Store(int64(v.ewma))
		if wasChecked && !wasUp {
			m.log.Info("pgxha: node up", "addr", n.cfg.Addr, "name", n.name(), "recovery", res.InRecovery)
		}
	} else {
		v.lastErr, v.lastErrAt, v.resAt = err, now, now
		if isTimeout(err) && v.up {
			v.timeouts++
		}
		switch {
		case isTimeout(err) && v.up && v.timeouts < 2:
			// A timeout needs a confirmation: suspect now, check again.
			if !v.suspect {
				m.log.Warn("pgxha: node suspect: check timed out", "addr", n.cfg.Addr, "name", n.name(), "role", v.role.String(), "err", err)
			}
			v.suspect = true
			again = true
		default:
			if v.up || !wasChecked {
				m.log.Warn("pgxha: node down", "addr", n.cfg.Addr, "name", n.name(), "role", v.role.String(), "err", err)
			}
			if v.up {
				after.reset = append(after.reset, n)
				after.refresh = true
				// A hung or cut-off replica's reads can go elsewhere: cut
				// them now. The master's are cut once another node is
				// master (see rebuildLocked): nothing else can take them.
				if isTimeout(err) && v.role != RoleMaster {
					after.sever = append(after.sever, n)
				}
			}
			v.up, v.suspect, v.timeouts = false, false, 0
		}
	}
	v.partial = false
	n.suspect.Store(v.suspect)
	n.watchable.Store(v.up && v.res.InRecovery)
	var only *node
	if wasChecked && !v.mayWrite() && routedAs(v) == before && len(v.res.Replicas) == 0 {
		// What the others' roles depend on did not change (and no replica
		// cascades from it): derive n's alone.
		only = n
	}
	m.rebuildLocked(now, &after, only)
	close(v.reported)
	v.reported = make(chan struct{})
	if err == nil && m.built.master == n && !res.InRecovery && !res.ReadOnly {
		// The master's positions, for replicas' lag: the elected master's
		// only, so that a stale master does not reset the record.
		m.history.add(n.index, res.Timeline, now.Add(-latency/2), res.LSN)
	}
	m.mu.Unlock()
	m.finish(n, &after)
	return again
}

// routedBy is what of a node's view other nodes' roles depend on: whether
// it can be master and, for matching replicas to the master's
// pg_stat_replication, its name and address.
type routedBy struct {
	up, suspect, inRecovery, readOnly, partial bool
	timeline, receiveTimeline                  uint32
	server                                     checker.ServerID
	name, remoteIP                             string
	cascade                                    string // the replicas it lists, for cascading ones
}

func routedAs(v *nodeView) routedBy {
	r := routedBy{
		up: v.up, suspect: v.suspect, inRecovery: v.res.InRecovery, readOnly: v.res.ReadOnly,
		partial: v.partial, timeline: v.res.Timeline, receiveTimeline: v.res.ReceiveTimeline,
		server: v.res.Server(), name: v.res.Name, remoteIP: v.remoteIP,
	}
	if len(v.res.Replicas) > 0 {
		var b strings.Builder
		for _, x := range v.res.Replicas {
			b.WriteString(x.ApplicationName)
			b.WriteByte(0)
			b.WriteString(x.ClientAddr)
			b.WriteByte(0)
		}
		r.cascade = b.String()
	}
	return r
}

// mayWrite reports whether the view makes the node a candidate for master:
// reachable (or only suspect) and neither in recovery nor read-only.
func (v *nodeView) mayWrite() bool {
	return (v.up || v.suspect) && !v.res.InRecovery && !v.res.ReadOnly
}

// builtFrom is what the last rebuild derived every node's role from.
type builtFrom struct {
	master      *node
	writable    int
	masterKnown bool
	cluster     uint64
	timeline    uint32
}

// promotionSeen records what n's promotion watcher saw: n left recovery. The
// node's view takes the watcher's figures at once (writable or not, timeline,
// WAL position), so that writes go to it without waiting for the full check,
// which runs right after and completes the view. Until then the other
// replicas keep their roles: the new master's pg_stat_replication is not
// known yet. (The watcher reads default_transaction_read_only as the server's
// configuration was when its statement began: a node made read-only by a
// reload during that statement is taken for writable until the check, a
// round trip later, corrects it.)
func (m *Manager) promotionSeen(n *node, p checker.Promotion) {
	now := time.Now()
	var after afterReport
	m.mu.Lock()
	v := &n.view
	if !v.up || !v.res.InRecovery {
		m.mu.Unlock()
		return
	}
	v.res.InRecovery, v.res.ReadOnly, v.res.Timeline, v.res.LSN = false, p.ReadOnly, p.Timeline, p.LSN
	v.res.ReplayPaused, v.res.Replicas = false, nil
	v.resAt, v.partial = now, true
	m.log.Debug("pgxha: node left recovery", "addr", n.cfg.Addr, "name", n.name(), "timeline", p.Timeline, "read_only", p.ReadOnly)
	n.watchable.Store(false)
	m.rebuildLocked(now, &after, nil)
	m.mu.Unlock()
	m.finish(n, &after)
}

// finish does what report or promotionSeen decided, once m.mu is released.
func (m *Manager) finish(n *node, after *afterReport) {
	for _, x := range after.reset {
		x.pool.Reset()
	}
	for _, x := range after.sever {
		if k := x.sever(); k > 0 {
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
		v := &x.view
		key[i] = routingEntry{
			node:      x,
			role:      v.role,
			up:        v.up,
			suspect:   v.suspect,
			eligible:  v.role.IsReplica() && x.withinLag(m.cfg.MaxLagBytes, m.cfg.MaxLag) && !x.noLoadBalance(),
			latencyMS: latencyBucket(v.ewma),
			tags:      x.tags.Load(),
		}
	}
	old := m.snap.Load()
	if old.closed {
		return
	}
	if slices.Equal(key, m.routingKey) && old.master == master && sameErr(old.masterErr, masterErr) && sameStale(old.staleErr, staleErr) {
		return
	}
	m.routingKey = key

	s := &snapshot{changed: make(chan struct{}), master: master, masterErr: masterErr, staleErr: staleErr}
	if master != nil {
		s.sets[setMaster] = m.buildSet([]*node{master}, nil)
	}
	var all, plain, suspects, syncs []*node
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
		if key[i].role == RoleSyncReplica {
			syncs = append(syncs, x)
		}
	}
	if len(plain) == 0 {
		plain = suspects // a suspect replica beats none
	}
	if z := m.cfg.Zone; z != "" {
		plain, syncs = inZone(plain, z), inZone(syncs, z)
	}
	s.sets[setAllReplicas] = m.buildSet(all, nil)
	s.sets[setSync] = m.buildSet(syncs, nil)
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

// roleChanged logs and counts a role change. Until a replica's role was
// derived with a master known (a replica checked before its master counts
// as async until then), a change between replica roles completes its first
// role and is logged, like the first, at Debug. Caller must hold m.mu.
func (m *Manager) roleChanged(x *node, from, to Role, master *node) {
	m.tel.roleChanged(x, from, to)
	attrs := []any{"addr", x.cfg.Addr, "name", x.name(), "from", from.String(), "to", to.String()}
	switch {
	case to == RoleMaster && !m.everHadMaster:
		m.everHadMaster = true
		m.log.Debug("pgxha: master found", append(attrs, "timeline", x.view.res.Timeline)...)
	case to == RoleMaster:
		m.log.Warn("pgxha: new master", append(attrs, "timeline", x.view.res.Timeline)...)
		m.tel.failover(x)
	case from == RoleUnknown && x.view.lastErr == nil, !x.view.settled && from.IsReplica() && to.IsReplica():
		m.log.Debug("pgxha: node found", attrs...)
	default:
		m.log.Info("pgxha: role changed", attrs...)
	}
}

// reportSplitBrain logs a split brain when it starts and when it ends.
// Caller must hold m.mu.
func (m *Manager) reportSplitBrain(writable []*node, master *node, masterErr error) {
	desc := ""
	if len(writable) > 1 {
		parts := make([]string, len(writable))
		for i, x := range writable {
			parts[i] = x.cfg.Addr + " (timeline " + uitoa(x.view.res.Timeline) + ")"
		}
		desc = strings.Join(parts, ", ")
	}
	if desc == m.splitBrain {
		return
	}
	switch {
	case desc == "":
		m.log.Info("pgxha: split brain over", "was", m.splitBrain)
	case masterErr != nil:
		m.log.Error("pgxha: split brain: writes refused", "writable", desc, "err", masterErr)
	default:
		m.log.Warn("pgxha: split brain: writes go to the newest timeline", "writable", desc, "master", master.cfg.Addr)
	}
	m.splitBrain = desc
	m.tel.splitBrain(desc != "")
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
// started, so that every node is checked at the same moments. Checks in step
// are cheaper (one wake-up of the process serves them all instead of one
// each, which is most of their cost with many nodes) and compare like with
// like (the master's position and a replica's are read together, so lag is
// not skewed by up to an interval). A node checked late (a slow check, a
// re-check) skips a tick that is less than a quarter of d away, so that
// checks of one node are never closer than that.
func (m *Manager) untilTick(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	since := time.Since(m.epoch)
	w := d - since%d
	if w < d/4 {
		w += d
	}
	return w
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

// lsnHistory remembers the master's WAL position at its recent checks, to
// tell how old the newest data a replica has not replayed is.
type lsnHistory struct {
	owner    int // index of the node the samples are of
	timeline uint32
	samples  [512]lsnSample // ring
	head     int            // next write
	count    int
}

type lsnSample struct {
	at  time.Time
	lsn checker.LSN
}

func (h *lsnHistory) add(owner int, timeline uint32, at time.Time, lsn checker.LSN) {
	if h.owner != owner || h.timeline != timeline || h.count == 0 {
		*h = lsnHistory{owner: owner, timeline: timeline}
	}
	if h.count > 0 && h.at(h.count-1).lsn > lsn {
		h.count = 0 // went backwards: a new history
		h.head = 0
	}
	h.samples[h.head] = lsnSample{at: at, lsn: lsn}
	h.head = (h.head + 1) % len(h.samples)
	h.count = min(h.count+1, len(h.samples))
}

// at returns the i-th oldest sample.
func (h *lsnHistory) at(i int) lsnSample {
	start := (h.head - h.count + len(h.samples)) % len(h.samples)
	return h.samples[(start+i)%len(h.samples)]
}

// lagFor is how long ago the master had WAL beyond replay: the time since
// the oldest sample past replay. When only the newest sample is past it, the
// replica is within one check of the master and 0 is returned (the master's
// replay_lag is the finer measure then). covered is false when every sample
// is past replay (or there is none): the history began after the replica's
// position, and the time returned is only a lower bound.
func (h *lsnHistory) lagFor(replay checker.LSN, now time.Time) (lag time.Duration, covered bool) {
	if h.count == 0 {
		return 0, false
	}
	// Samples are in LSN order: find the first one past replay.
	lo, hi := 0, h.count
	for lo < hi {
		mid := (lo + hi) / 2
		if h.at(mid).lsn > replay {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	switch {
	case lo == 0:
		return max(now.Sub(h.at(0).at), 0), false
	case lo >= h.count-1:
		return 0, true
	}
	return max(now.Sub(h.at(lo).at), 0), true
}
