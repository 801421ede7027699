package hasql

import (
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// rebuildLocked derives roles, lag and split brain from every node's view,
// swaps in a new snapshot when routing changed, and adjusts fast checking.
// only, if not nil, is a replica (not writable) whose report changed nothing
// that other nodes' roles depend on: unless the master or what the Manager
// remembers of the cluster turns out to have changed, only its own role and
// lag are derived again, so that a round of checks of n nodes costs O(n)
// matching rather than O(n²) (every replica is matched against the master's
// list of replicas). Caller must hold m.mu.
//
// The safety rules it applies (DESIGN.md, "Safety invariants"):
//   - The master is the one writable server on the highest timeline the
//     Manager has seen in its cluster (one system identifier). A writable
//     node below that timeline is a stale master: never routed to for
//     writes, however the others fare, until an operator calls
//     ForgetTimeline or it rejoins as a replica.
//   - A replica serves reads only while it follows the current master: same
//     system identifier, on the master's timeline, not ahead of it, and
//     listed by the master's walsenders (or, cascading, by those of a replica
//     that follows it). Otherwise it is detached.
//   - Sync is claimed only when the master says so for that replica alone.
//   - One server reached through two addresses is one server.
func (m *Manager) rebuildLocked(now time.Time, after *afterReport, only *node) {
	m.dedupLocked()
	master, masterErr, writable := m.electLocked()
	m.staleErr = nil
	if se, ok := masterErr.(*StaleMasterError); ok {
		// No master but stale ones: acquires wait for one, as with no
		// master at all (a promotion under way is about to end it), and
		// their error says why when they give up.
		masterErr, m.staleErr = nil, se
	}
	m.reportSplitBrain(writable, master, masterErr)

	var mres checker.Result
	if master != nil {
		mres = master.view.res
	}
	// A master known only from its promotion watcher has not said yet which
	// replicas stream from it.
	masterKnown := master != nil && !master.view.partial
	historyOK := masterKnown && m.history.owner == master.index && m.history.timeline == mres.Timeline
	built := builtFrom{master: master, writable: len(writable), masterKnown: masterKnown,
		cluster: m.cluster, timeline: m.timeline}
	if only != nil && (only == master || built != m.built || only.view.aliasOf != nil) {
		only = nil
	}
	m.built = built

	// Which replicas follow the master: those its walsenders list, then,
	// cascading, those listed by a replica that follows it. Bounded by the
	// number of nodes: each round adds at least one node or ends.
	follows := m.follows[:0]
	if masterKnown {
		for range m.nodes {
			added := false
			for _, x := range m.nodes {
				if x == master || x.view.aliasOf != nil || !x.view.res.InRecovery || containsNode(follows, x) {
					continue
				}
				if m.attachedLocked(x, master, follows) == "" {
					follows = append(follows, x)
					added = true
				}
			}
			if !added {
				break
			}
		}
	}
	m.follows = follows

	for _, x := range m.nodes {
		if only != nil && x != only {
			continue
		}
		v := &x.view
		prev := v.role
		v.splitBrain = v.writable && len(writable) > 1 && v.aliasOf == nil
		prevDetached := v.detached
		v.detached, v.syncUnknown = "", ""
		role := RoleUnknown
		switch {
		case v.aliasOf != nil:
			role = RoleUnknown // see the node it duplicates
		case x == master:
			role = RoleMaster
			v.syncState = ""
		case v.stale:
			role = RoleStaleMaster
		case (v.up || v.suspect) && v.res.InRecovery:
			role = m.replicaRoleLocked(x, master, masterKnown, prev, prevDetached, follows)
			if masterKnown && role != RoleDetached {
				m.lagLocked(x, master, historyOK, now)
			}
		}
		if role == RoleDetached && v.detached != v.loggedDetached {
			m.log.Warn("pgxha: replica detached: no reads", "addr", x.cfg.Addr, "name", x.name(), "why", v.detached)
		}
		v.loggedDetached = v.detached
		if v.syncUnknown != "" && v.syncUnknown != syncUnknownNoMaster && v.syncUnknown != v.loggedSync {
			m.log.Warn("pgxha: replica's sync state unknown", "addr", x.cfg.Addr, "name", x.name(), "why", v.syncUnknown)
		}
		v.loggedSync = v.syncUnknown
		v.role = role
		x.replayLSN.Store(uint64(v.res.LSN))
		x.lagBytes.Store(v.lagBytes)
		x.lagNanos.Store(int64(v.lag))
		x.lagKnown.Store(v.lagKnown && role.IsReplica())
		x.sync.Store(role == RoleSyncReplica)
		x.mayWrite.Store(v.writable)
		x.replica.Store(role.IsReplica())

		if prev != role && v.checked {
			m.roleChanged(x, prev, role, master)
			if prev == RoleMaster {
				// No longer master: no connection opened while it was may
				// linger. What is in flight there may go on while no other
				// node can take writes (a slow link to the only master); it
				// is cut once another node is master (or this one is known
				// to be stale), since a hung or fenced node would hold it
				// until the application's context ends.
				if v.up || v.suspect {
					after.reset = append(after.reset, x)
				}
				v.severPending = true
			}
		}
		if v.severPending && (role == RoleMaster || !v.checked) {
			v.severPending = false
		}
		if v.severPending && (master != nil && master != x || role == RoleStaleMaster) {
			v.severPending = false
			after.sever = append(after.sever, x)
		}
		v.settled = v.settled || masterKnown && role != RoleUnknown
	}
	// An alias has the role of the node it duplicates, for reporting.
	for _, x := range m.nodes {
		if x.view.aliasOf != nil {
			x.view.role = x.view.aliasOf.view.role
		}
	}

	// Fast checks while there is no master or the master is suspect.
	needFast := master == nil || master.view.suspect || master.slow.Load()
	if needFast {
		if m.fastSince.Load() == 0 {
			m.fastSince.Store(now.UnixNano())
			after.trigger = true
		}
	} else {
		m.fastSince.Store(0)
	}

	m.swapSnapshotLocked(master, masterErr, m.staleErr)
}

// dedupLocked finds nodes that reach a server another node reaches too (a
// virtual IP or a DNS name beside the server's own address): the first such
// node in connection string order that is up, not suspect, stands for the
// server; the others are its aliases. Caller must hold m.mu.
func (m *Manager) dedupLocked() {
	for i, x := range m.nodes {
		x.view.aliasOf = nil
		id := x.view.server()
		if id == (checker.ServerID{}) {
			continue
		}
		for _, y := range m.nodes[:i] {
			if y.view.aliasOf == nil && y.view.server() == id {
				x.view.aliasOf = y
				break
			}
		}
	}
	// Prefer a healthy representative: swap with a suspect one.
	for _, x := range m.nodes {
		y := x.view.aliasOf
		if y != nil && y.view.suspect && x.view.up && !x.view.suspect {
			for _, z := range m.nodes {
				if z.view.aliasOf == y {
					z.view.aliasOf = x
				}
			}
			x.view.aliasOf, y.view.aliasOf = nil, x
		}
	}
}

// server is the identity of the server the node's last check reached; zero
// when it is not up or the checker does not tell.
func (v *nodeView) server() checker.ServerID {
	if !v.up && !v.suspect {
		return checker.ServerID{}
	}
	return v.res.Server()
}

// electLocked picks the master: the one writable server on the highest
// timeline the Manager has seen in its cluster. It learns the cluster (the
// system identifier of the first master) and raises the highest timeline
// from every node of it, replicas included: a replica on timeline 3 proves
// that timeline 3 exists, and a writable node on timeline 2 is then stale.
// Caller must hold m.mu.
func (m *Manager) electLocked() (master *node, masterErr error, writable []*node) {
	for _, x := range m.nodes {
		v := &x.view
		v.writable = v.mayWrite()
		v.stale = false
		if v.writable && v.aliasOf == nil {
			writable = append(writable, x)
		}
	}
	if m.cluster == 0 {
		// The first master defines the cluster: every writable server must
		// agree on it, or there is nothing to elect. With none, the
		// replicas, if they all agree.
		from := writable
		if len(from) == 0 {
			for _, x := range m.nodes {
				if x.view.up || x.view.suspect {
					from = append(from, x)
				}
			}
		}
		var id uint64
		agree := true
		for _, x := range from {
			sid := x.view.res.SystemID
			if id == 0 {
				id = sid
			} else if sid != 0 && sid != id {
				agree = false
			}
		}
		if agree && id != 0 {
			m.cluster = id
		}
	}
	for _, x := range m.nodes {
		v := &x.view
		if (!v.up && !v.suspect) || v.res.SystemID == 0 || v.res.SystemID != m.cluster {
			continue
		}
		m.timeline = max(m.timeline, bestTimeline(&v.res))
	}
	var top []*node
	var stale []string
	for _, x := range writable {
		v := &x.view
		if m.cluster != 0 && v.res.SystemID != 0 && v.res.SystemID != m.cluster {
			continue // another cluster's server: not ours to write to
		}
		if v.res.Timeline < m.timeline {
			v.stale = true
			stale = append(stale, x.cfg.Addr+" (timeline "+uitoa(v.res.Timeline)+")")
			continue
		}
		if y := m.aheadReplicaLocked(x); y != nil {
			// A replica of the cluster has WAL this node never wrote: a
			// newer timeline exists somewhere, although no node the
			// Manager reaches shows its number (a Manager started after
			// the new master died). Remembered like a timeline seen: the
			// evidence may fade (this node writes on past the replica's
			// position), the newer timeline's writes are still not here.
			m.timeline = max(m.timeline, v.res.Timeline+1)
			v.stale = true
			stale = append(stale, x.cfg.Addr+" (timeline "+uitoa(v.res.Timeline)+", behind replica "+y.cfg.Addr+")")
			continue
		}
		top = append(top, x)
	}
	staleDesc := strings.Join(stale, ", ")
	if staleDesc != m.staleReported {
		if staleDesc != "" {
			m.log.Error("pgxha: stale master: writable on an older timeline than the cluster's; no writes go to it",
				"nodes", staleDesc, "cluster_timeline", m.timeline)
		}
		m.staleReported = staleDesc
	}
	switch {
	case len(top) == 1:
		if top[0].view.res.Timeline > m.ignoreAhead {
			m.ignoreAhead = 0
		}
		return top[0], nil, writable
	case len(top) > 1:
		addrs := make([]string, len(top))
		for i, x := range top {
			addrs[i] = x.cfg.Addr
		}
		return nil, &SplitBrainError{Addrs: addrs, Timeline: top[0].view.res.Timeline}, writable
	case len(stale) > 0:
		return nil, &StaleMasterError{Nodes: stale, Timeline: m.timeline}, writable
	}
	return nil, nil, writable
}

// aheadReplicaLocked returns a replica of the cluster that is ahead of w,
// a writable node (see aheadOf), or nil. After ForgetTimeline it is nil
// until a master is elected on a newer timeline. Caller must hold m.mu.
func (m *Manager) aheadReplicaLocked(w *node) *node {
	if m.ignoreAhead > 0 && w.view.res.Timeline <= m.ignoreAhead {
		return nil
	}
	for _, y := range m.nodes {
		v := &y.view
		if y == w || v.aliasOf != nil || (!v.up && !v.suspect) || !v.res.InRecovery ||
			v.res.SystemID == 0 || v.res.SystemID != w.view.res.SystemID {
			continue
		}
		// Only WAL of the writable node's timeline or a newer one says
		// so: a replica left on an older timeline may hold WAL past the
		// point where the newer one forked off (never acknowledged), and
		// so may the position a former master had before it was rewound.
		if bestTimeline(&v.res) >= w.view.res.Timeline && y.aheadOnTimelineOf(w) {
			return y
		}
	}
	return nil
}

// ForgetTimeline makes the Manager forget the highest timeline it has seen
// and the cluster it belongs to, and derive both again from what the nodes
// report now. It is the operator's way out of a stale master that is to
// become master again although a newer timeline existed: the writes made on
// that timeline are given up. Replicas that have WAL the writable nodes
// lack stop counting against them too, until a master is elected on a newer
// timeline; they stay detached (no reads) until they follow the master. The usual way out is to rewind the stale node
// (pg_rewind) and let it rejoin as a replica of the current master, or to
// promote a replica that has the newest timeline.
func (m *Manager) ForgetTimeline() {
	var after afterReport
	m.mu.Lock()
	m.log.Warn("pgxha: highest timeline forgotten", "was", m.timeline)
	m.cluster, m.timeline = 0, 0
	// Replicas ahead of the writable nodes are the evidence being given
	// up too, up to the timelines those nodes are on now.
	for _, x := range m.nodes {
		if x.view.mayWrite() {
			m.ignoreAhead = max(m.ignoreAhead, x.view.res.Timeline)
		}
	}
	m.rebuildLocked(time.Now(), &after, nil)
	m.mu.Unlock()
	m.finish(nil, &after)
}

// replicaRoleLocked derives the role of x, a replica that is up: whether it
// follows the master, and whether the master waits for it. Caller must hold
// m.mu.
func (m *Manager) replicaRoleLocked(x, master *node, masterKnown bool, prev Role, prevDetached string, follows []*node) Role {
	v := &x.view
	if !masterKnown {
		// No master to ask: what proves it does not follow the cluster's
		// newest timeline still counts; otherwise it keeps what it was:
		// a replica that was detached stays so until a master lists it.
		if why := m.foreignLocked(x); why != "" {
			v.detached = why
			return RoleDetached
		}
		if prev == RoleDetached {
			v.detached = prevDetached
			return RoleDetached
		}
		if prev.IsReplica() {
			return prev
		}
		// First seen while no master is known (checked before it, or the
		// Manager started on a cluster without one): it serves reads, its
		// lag and sync state unknown until a master says more, unless
		// even its restartpoint's timeline is older than the cluster's.
		if r := &v.res; r.ReceiveTimeline == 0 && r.Timeline != 0 && r.Timeline < m.timeline {
			v.detached = "on timeline " + uitoa(r.Timeline) + ", older than the cluster's " + uitoa(m.timeline) + ", and no master to say whether it follows"
			return RoleDetached
		}
		v.syncUnknown = syncUnknownNoMaster
		return RoleReplica
	}
	if !containsNode(follows, x) {
		v.detached = m.attachedLocked(x, master, follows)
		return RoleDetached
	}
	mres := &master.view.res
	entry, match := matchReplica(x, mres.Replicas, m.nodes)
	v.syncState = ""
	switch match {
	case matchNone:
		// Listed by a replica it cascades from: never waited for.
		return RoleAsyncReplica
	case matchAmbiguous:
		v.syncUnknown = "more than one walsender on the master reports application_name " + strconv.Quote(x.name()) +
			"; give each replica its own (cluster_name or primary_conninfo's application_name) or name it with WithReplicaName"
		return RoleReplica
	case matchUnnamed:
		v.syncUnknown = "the replica's application_name is unknown and the master's walsenders show no addresses; set cluster_name, or grant pg_monitor to the check user"
		return RoleReplica
	}
	v.syncState = entry.SyncState
	switch entry.SyncState {
	case "sync":
		return RoleSyncReplica
	case "quorum":
		return RoleQuorumReplica
	case "":
		v.syncUnknown = "the check user may not read pg_stat_replication's sync_state; grant it pg_monitor"
		return RoleReplica
	}
	return RoleAsyncReplica
}

// syncUnknownNoMaster is why a replica's sync state is unknown while no
// master is known: not worth a warning.
const syncUnknownNoMaster = "no master known to tell"

// foreignLocked says why x cannot follow the cluster's newest timeline
// whatever the master: another system identifier, or a timeline below the
// newest the Manager has seen. "" when nothing says so. Caller must hold m.mu.
func (m *Manager) foreignLocked(x *node) string {
	r := &x.view.res
	if m.cluster != 0 && r.SystemID != 0 && r.SystemID != m.cluster {
		return "another cluster: system identifier " + strconv.FormatUint(r.SystemID, 10) + ", the cluster's is " + strconv.FormatUint(m.cluster, 10)
	}
	if tl := bestTimeline(r); r.ReceiveTimeline != 0 && tl < m.timeline {
		return "left behind on timeline " + uitoa(tl) + "; the cluster is on timeline " + uitoa(m.timeline)
	}
	return ""
}

// attachedLocked says why x does not follow master, "" when it does: same
// system identifier, on the master's timeline, not ahead of it, listed by
// its walsenders or by those of a replica in follows (cascading). Caller
// must hold m.mu.
func (m *Manager) attachedLocked(x, master *node, follows []*node) string {
	v, mv := &x.view, &master.view
	r, mr := &v.res, &mv.res
	if why := m.foreignLocked(x); why != "" {
		return why
	}
	if r.SystemID != 0 && mr.SystemID != 0 && r.SystemID != mr.SystemID {
		return "another cluster: system identifier " + strconv.FormatUint(r.SystemID, 10) + ", the master's is " + strconv.FormatUint(mr.SystemID, 10)
	}
	if tl := bestTimeline(r); r.ReceiveTimeline != 0 && tl != mr.Timeline {
		return "streams timeline " + uitoa(tl) + ", the master is on timeline " + uitoa(mr.Timeline)
	}
	if r.ReceiveTimeline == 0 && r.Timeline > mr.Timeline {
		return "on timeline " + uitoa(r.Timeline) + ", ahead of the master's " + uitoa(mr.Timeline)
	}
	// A replica checked before the master cannot have replayed more than the
	// master had written by then.
	if x.aheadOf(master) {
		return "ahead of the master: at " + max(r.LSN, r.ReceiveLSN).String() + ", the master at " + mr.LSN.String()
	}
	switch _, match := matchReplica(x, mr.Replicas, m.nodes); match {
	case matchOne, matchAmbiguous:
		return ""
	case matchUnnamed:
		// Nothing to match it by: its own walreceiver must show the
		// master's timeline.
		if r.ReceiveTimeline == mr.Timeline {
			return ""
		}
		return "cannot tell whether it streams from the master: its application_name is unknown and its timeline hidden; set cluster_name, or grant pg_monitor to the check user"
	}
	for _, y := range follows {
		if _, match := matchReplica(x, y.view.res.Replicas, m.nodes); match == matchOne || match == matchAmbiguous {
			return ""
		}
	}
	if hiddenRows(mr.Replicas) {
		return "not found among the master's walsenders by the name " + strconv.Quote(x.name()) +
			"; the check user lacks pg_monitor, so the replica's own application_name (primary_conninfo) is hidden: grant pg_monitor, make cluster_name the same, or name it with WithReplicaName"
	}
	if r.ReceiveTimeline == 0 && r.Timeline < mr.Timeline {
		return "not streaming from the master (not in its pg_stat_replication), last on timeline " + uitoa(r.Timeline)
	}
	return "not streaming from the master (not in its pg_stat_replication)"
}

// lagLocked measures x's lag behind master. Bytes: the master's position
// less the replica's replayed one. Time: the master's replay_lag for it, the
// age of the oldest of the master's positions the replica has not replayed,
// and, while WAL is pending that no position the Manager recorded covers,
// the age of its last replayed transaction, which bounds the lag from
// above. With none of them the lag is unknown, never 0. Caller must hold m.mu.
func (m *Manager) lagLocked(x, master *node, historyOK bool, now time.Time) {
	v := &x.view
	mres := &master.view.res
	entry, match := matchReplica(x, mres.Replicas, m.nodes)
	if match != matchOne {
		entry = checker.Replica{}
	}
	replay := max(v.res.LSN, entry.ReplayLSN)
	v.lagBytes = 0
	if mres.LSN > replay {
		v.lagBytes = int64(mres.LSN - replay)
	}
	v.lagAt = now
	if v.lagBytes == 0 {
		v.lag, v.lagKnown = 0, true
		return
	}
	lag, known := time.Duration(0), false
	if entry.HasReplayLag {
		lag, known = entry.ReplayLag, true
	}
	covered := false
	if historyOK {
		h, c := m.history.lagFor(replay, now)
		lag, covered = max(lag, h), c
		known = known || c
	}
	if !covered && !v.res.ReplayTime.IsZero() && !v.res.ServerTime.IsZero() {
		// WAL is pending beyond what the history covers: nothing it lacks
		// is older than its last replayed transaction.
		lag, known = max(lag, v.res.ServerTime.Sub(v.res.ReplayTime)), true
	}
	v.lag, v.lagKnown = lag, known
}

func containsNode(nodes []*node, x *node) bool {
	for _, n := range nodes {
		if n == x {
			return true
		}
	}
	return false
}

// nameShared reports whether a node other than x (and not the same server)
// goes by name too.
func nameShared(x *node, name string, nodes []*node) bool {
	for _, y := range nodes {
		if y != x && y.view.aliasOf != x && x.view.aliasOf != y && y.view.aliasOf == nil &&
			(y.view.up || y.view.suspect) && y.view.res.InRecovery && y.name() == name {
			return true
		}
	}
	return false
}

// hiddenRows reports walsender rows the check user may not see the details
// of (no pg_monitor): neither a sync state nor an address.
func hiddenRows(rows []checker.Replica) bool {
	if len(rows) == 0 {
		return false
	}
	for _, r := range rows {
		if r.SyncState != "" || r.ClientAddr != "" {
			return false
		}
	}
	return true
}

// replicaMatch is how a replica was found among a node's walsenders.
type replicaMatch int

const (
	matchNone      replicaMatch = iota // not listed
	matchOne                           // one row is it
	matchAmbiguous                     // its name is on more than one row
	matchUnnamed                       // nothing to match it by: no name, no addresses shown
)

// matchReplica finds x in rows, a node's pg_stat_replication: by name, else
// by address when only one row has it and no other node shares the address.
func matchReplica(x *node, rows []checker.Replica, nodes []*node) (checker.Replica, replicaMatch) {
	name := x.name()
	if name != "" {
		var found checker.Replica
		count := 0
		for _, r := range rows {
			if r.ApplicationName == name {
				found = r
				count++
			}
		}
		switch {
		case count == 1 && !nameShared(x, name, nodes):
			return found, matchOne
		case count >= 1:
			// Two rows of one name, or one row whose name two nodes go by
			// (a replica cascading from another with the same name): the
			// row may be either's.
			return checker.Replica{}, matchAmbiguous
		}
	}
	ip := x.view.remoteIP
	if ip == "" {
		if a := net.ParseIP(x.cfg.Host); a != nil {
			ip = a.String()
		}
	}
	addressesShown := false
	for _, r := range rows {
		if r.ClientAddr != "" {
			addressesShown = true
			break
		}
	}
	if name == "" && !addressesShown {
		return checker.Replica{}, matchUnnamed
	}
	if ip == "" {
		return checker.Replica{}, matchNone
	}
	var found checker.Replica
	count := 0
	for _, r := range rows {
		if r.ClientAddr == ip {
			found = r
			count++
		}
	}
	if count != 1 {
		return checker.Replica{}, matchNone
	}
	// Another node on the same address would make the match a guess.
	for _, other := range nodes {
		if other != x && other.view.aliasOf != x && x.view.aliasOf != other &&
			(other.view.remoteIP == ip || other.cfg.Host == x.cfg.Host) {
			return checker.Replica{}, matchNone
		}
	}
	return found, matchOne
}
