package topology

import (
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// routedBy is what of a node's view other nodes' roles depend on.
type routedBy struct {
	up, suspect, inRecovery, readOnly, partial bool
	timeline, receiveTimeline                  uint32
	server                                     checker.ServerID
	name, remoteIP                             string
	cascade                                    string // the replicas it lists, for cascading ones
}

func routedAs(x *Node) routedBy {
	r := routedBy{
		up: x.Up, suspect: x.Suspect, inRecovery: x.Res.InRecovery, readOnly: x.Res.ReadOnly,
		partial: x.Partial, timeline: x.Res.Timeline, receiveTimeline: x.Res.ReceiveTimeline,
		server: x.Res.Server(), name: x.Res.Name, remoteIP: x.RemoteIP,
	}
	if len(x.Res.Replicas) > 0 {
		var b strings.Builder
		for _, y := range x.Res.Replicas {
			b.WriteString(y.ApplicationName)
			b.WriteByte(0)
			b.WriteString(y.ClientAddr)
			b.WriteByte(0)
		}
		r.cascade = b.String()
	}
	return r
}

// mayWrite reports whether the view makes the node a candidate for master:
// reachable (or only suspect) and neither in recovery nor read-only.
func (x *Node) mayWrite() bool {
	return (x.Up || x.Suspect) && !x.Res.InRecovery && !x.Res.ReadOnly
}

// live reports a node whose last check succeeded (or that is only suspect).
func (x *Node) live() bool { return x.Up || x.Suspect }

// bestTimeline is the newest timeline a node is known to have: on a replica
// the newer of what its walreceiver last received and what its control
// data says.
func bestTimeline(r *checker.Result) uint32 { return max(r.ReceiveTimeline, r.Timeline) }

// builtFrom is what the last rebuild derived every node's role from.
type builtFrom struct {
	master      *Node
	writable    int
	masterKnown bool
	cluster     uint64
	timeline    uint32
}

// rebuild derives roles, lag and split brain from every node's view. only,
// if not nil, is a replica whose check changed nothing that other nodes'
// roles depend on: unless the master or what the core remembers of the
// cluster turns out to have changed, only its own role and lag are derived
// again, so that a round of checks of n nodes costs O(n) matching rather
// than O(n²).
//
// The safety rules it applies (DESIGN.md, "Safety invariants"):
//   - The master is the one writable, vouched server of the cluster (one
//     system identifier) on the newest timeline its vouched nodes have
//     shown. A writable node below that timeline is a stale master: never
//     routed to for writes until it rejoins or ForgetTimeline.
//   - A replica serves reads only while it follows the current master: same
//     system identifier, on the master's timeline, not ahead of it, and
//     listed by the master's walsenders (or, cascading, by those of a
//     replica that follows it). Otherwise it is detached.
//   - Sync is claimed only when the master says so for that replica alone.
//   - One server reached through two addresses is one server.
//   - A node nothing vouches for (not trusted, listed by no walsender of a
//     master) takes no writes, raises no timeline, makes no node stale, and
//     defines no cluster.
func (c *Core) rebuild(now time.Time, only *Node) {
	if c.dedup() {
		// A node became or stopped being another's alias: its role and
		// lag are its own now, or its representative's.
		only = nil
	}
	c.vouch()
	c.shareBack()
	prevMaster := c.elected.Master
	c.elect()
	master := c.elected.Master
	c.reportSplitBrain()

	var mres checker.Result
	if master != nil {
		mres = master.Res
	}
	// A master known only from its promotion probe has not said yet which
	// replicas stream from it.
	masterKnown := master != nil && !master.Partial
	historyOK := masterKnown && c.history.owner == master.ID && c.history.timeline == mres.Timeline
	built := builtFrom{master: master, writable: c.writableCount(), masterKnown: masterKnown,
		cluster: c.cluster, timeline: c.Timeline()}
	if only != nil && (only == master || built != c.built || only.AliasOf != nil) {
		only = nil
	}
	c.built = built

	// Which replicas follow the master: those its walsenders list, then,
	// cascading, those listed by a replica that follows it. Bounded by the
	// number of nodes: each round adds at least one node or ends.
	follows := c.follows[:0]
	if masterKnown {
		for range c.nodes {
			added := false
			for _, x := range c.nodes {
				if x == master || x.AliasOf != nil || !x.Res.InRecovery || !x.live() || containsNode(follows, x) {
					continue
				}
				if c.attached(x, master, follows) == "" {
					follows = append(follows, x)
					added = true
				}
			}
			if !added {
				break
			}
		}
		// A master's walsender (or a vouched cascading replica's) lists
		// it by a name no other node goes by, from its address: it is
		// vouched for.
		// The listing must come from a read that began once the server
		// now at x's address was there: a row of the one before proves
		// nothing of it.
		for _, x := range follows {
			if !master.replicasBegan.Before(x.serverSince) && listedFrom(x, master.Res.Replicas, c.nodes) {
				x.Vouched = true
				continue
			}
			for _, y := range follows {
				if y.Vouched && !y.replicasBegan.Before(x.serverSince) && listedFrom(x, y.Res.Replicas, c.nodes) {
					x.Vouched = true
					break
				}
			}
		}
	}
	c.follows = follows
	for _, x := range follows {
		x.followedBy, x.followedAt = master.ID, master.ResAt
	}

	if only != nil {
		c.ready.Derived = append(c.ready.Derived, only.ID)
	} else {
		c.ready.All = true
	}
	for _, x := range c.nodes {
		if only != nil && x != only {
			continue
		}
		prev := x.derived
		if damped := !x.DampedUntil.IsZero() && now.Before(x.DampedUntil); damped != x.Damped {
			x.Damped = damped
			if !damped {
				x.DampedUntil = time.Time{}
				c.log(slog.LevelInfo, "pgxha: node no longer damped: it serves reads again", "addr", x.Addr, "name", x.Name())
			}
		}
		x.SplitBrain = len(c.contenders) > 1 && containsNode(c.contenders, x)
		prevDetached := x.Detached
		x.Detached, x.SyncUnknown = "", ""
		role := RoleUnknown
		switch {
		case x.AliasOf != nil:
			role = RoleUnknown // see the node it duplicates
		case x == master:
			role = RoleMaster
			x.SyncState = ""
		case x.Stale:
			role = RoleStaleMaster
		case x.Writable && x.live():
			// Writable, yet not master nor stale: of another cluster, or
			// nothing vouches for it.
			if why := c.unelectable(x); why != "" {
				x.Detached = why
				role = RoleDetached
			}
		case x.live() && x.Res.InRecovery:
			role = c.replicaRole(x, master, masterKnown, prev, prevDetached, follows)
			switch {
			case masterKnown && role != RoleDetached:
				c.measureLag(x, master, historyOK, now)
			case !masterKnown:
				// No master to measure against: what it was behind
				// before says nothing of what the master (gone, or out
				// of the Manager's sight and writing on) has written
				// since, so the lag is unknown, not the last one kept.
				x.LagBytes, x.Lag, x.LagKnown, x.LagAt = 0, 0, false, now
			}
		}
		// A replica is detached for a moment in every failover (its
		// walreceiver has not switched to the new master's timeline yet):
		// the warning waits until a later check of its own still finds it
		// detached, for the same reason.
		switch {
		case role != RoleDetached:
			x.loggedDetached, x.detachedAt = "", 0
		case x.Detached != x.loggedDetached && x.detachedAt == 0:
			x.detachedAt = x.okChecks
		case x.Detached != x.loggedDetached && x.okChecks > x.detachedAt:
			c.log(slog.LevelWarn, "pgxha: node detached: no reads, no writes", "addr", x.Addr, "name", x.Name(), "why", x.Detached)
			x.loggedDetached = x.Detached
		}
		if x.SyncUnknown != "" && x.SyncUnknown != syncUnknownNoMaster && x.SyncUnknown != syncUnknownOldRows && x.SyncUnknown != syncUnknownRenamed && x.SyncUnknown != x.loggedSync {
			c.log(slog.LevelWarn, "pgxha: replica's sync state unknown", "addr", x.Addr, "name", x.Name(), "why", x.SyncUnknown)
		}
		x.loggedSync = x.SyncUnknown
		x.Role, x.derived = role, role

		if prev != role && x.Checked {
			c.roleChanged(x, prev, role, prevMaster)
			if prev == RoleMaster {
				// No longer master: no connection opened while it was may
				// linger. What is in flight there may go on while no other
				// node can take writes (a slow link to the only master); it
				// is cut once another node is master (or this one is known
				// to be stale), since a hung or fenced node would hold it
				// until the application's context ends.
				if x.live() {
					c.reset(x)
				}
				x.severPending = true
			}
		}
		if x.severPending && (role == RoleMaster || !x.Checked) {
			x.severPending = false
		}
		// An address of the master's server that stands for it no more
		// (another address of the server came first in the set's order)
		// reaches the master still, and answers: its writes in flight go on, and are
		// cut when another server is master, or the one it reaches is
		// stale (severPending stays).
		sameAsMaster := master != nil && x.AliasOf == master && x.Up && !x.Suspect && x.server() != (checker.ServerID{}) && x.server() == master.server()
		if x.severPending && (master != nil && master != x && !sameAsMaster || role == RoleStaleMaster ||
			x.AliasOf != nil && x.AliasOf.Stale) {
			x.severPending = false
			c.cut(x)
		}
		x.settled = x.settled || masterKnown && role != RoleUnknown
	}
	// An alias has the role, sync state and lag of the node it duplicates,
	// for reporting (the shell routes to the representative only); one
	// nothing vouches for only claims to be that server.
	for _, x := range c.nodes {
		y := x.AliasOf
		if y == nil {
			continue
		}
		if !x.Vouched {
			x.Role, x.Detached = RoleDetached, "claims to be the server at "+y.Addr+", and nothing vouches for it"
			continue
		}
		x.Role, x.SyncState, x.SyncUnknown = y.Role, y.SyncState, y.SyncUnknown
		x.syncTL, x.syncRead = y.syncTL, y.syncRead
		x.Stale, x.StaleBehind = y.Stale, y.StaleBehind
		x.Waiting = y.Waiting
		x.LagBytes, x.Lag, x.LagKnown, x.LagAt = y.LagBytes, y.Lag, y.LagKnown, y.LagAt
	}

	// Fast checks while there is no master or the master is suspect.
	needFast := master == nil || master.Suspect
	if needFast && !c.fast {
		c.ready.CheckOthers = true
	}
	c.fast = needFast
	c.ready.Fast = needFast
}

func (c *Core) writableCount() int {
	k := 0
	for _, x := range c.nodes {
		if x.Writable && x.AliasOf == nil {
			k++
		}
	}
	return k
}

// dedup finds nodes that reach a server another node reaches too (a virtual
// IP or a DNS name beside the server's own address): the first such node in
// the set's order that is up, not suspect, stands for the server; the
// others are its aliases.
func (c *Core) dedup() (changed bool) {
	// Vouched nodes first: a node nothing vouches for may claim another
	// server's identity (both are plain SQL to read), and must never stand
	// for it.
	order := make([]*Node, 0, len(c.nodes))
	for _, x := range c.nodes {
		if x.Vouched {
			order = append(order, x)
		}
	}
	for _, x := range c.nodes {
		if !x.Vouched {
			order = append(order, x)
		}
	}
	prev := make([]*Node, len(order))
	privileged := false // a writable node's walsenders show their addresses: the check user has pg_monitor
	for i, x := range order {
		prev[i] = x.AliasOf
		privileged = privileged || x.live() && x.Vouched && !x.Res.InRecovery && shownAddrs(x.Res.Replicas)
	}
	for _, x := range order {
		x.unconfirmed = ""
	}
	for i, x := range order {
		x.AliasOf = nil
		id := x.server()
		if id == (checker.ServerID{}) {
			continue
		}
		for _, y := range order[:i] {
			// One server answers under one name: two servers of one
			// base backup started in the same microsecond show one
			// identity, not one name (a replica whose walreceiver
			// starts meanwhile may show two for a check: two nodes
			// until its next).
			if y.AliasOf == nil && y.server() == id && (y.Res.Name == x.Res.Name || y.Res.Name == "" || x.Res.Name == "") {
				x.AliasOf = y
				break
			}
		}
		// The server restarted and one address's check saw it first:
		// still one server until the other address is checked again. Not
		// when the two answer under different names: one address's name
		// moved to another server of the cluster (a restart keeps the
		// name), which is not y, and has neither its role nor its lag;
		// unless x is a replica whose walreceiver has not started yet,
		// whose name is its cluster_name until it has (known only where
		// the check user sees walreceivers: without pg_monitor no name
		// comes from one, and the name does not change).
		// Not a writable x for a y that is not: a writable server whose
		// address stood for it while a name of y's moved onto a replica
		// would be hidden (a split brain missed); a master demoted by a
		// restart shows writable for one more check of its own.
		if y := prev[i]; x.AliasOf == nil && x.Vouched && y != nil && y.AliasOf == nil && slices.Contains(order[:i], y) &&
			!(x.mayWrite() && !y.mayWrite()) &&
			y.server() != (checker.ServerID{}) && y.Res.SystemID == x.Res.SystemID && y.Res.Timeline == x.Res.Timeline &&
			(y.Res.Name == x.Res.Name || x.Res.InRecovery && !streams(x) && privileged) &&
			(x.ResAt.Before(y.serverSince) || y.ResAt.Before(x.serverSince)) {
			x.AliasOf = y
			// Both writable: a restart of the master, or another
			// writable server under the same name at y's address (a
			// split brain x would hide). No master until x is checked
			// again (soon: no master has the checks run fast).
			if x.mayWrite() && y.mayWrite() && y.unconfirmed == "" {
				y.unconfirmed = x.Addr
			}
		}
	}
	// Prefer a healthy representative: swap with a suspect one.
	for _, x := range c.nodes {
		y := x.AliasOf
		if y != nil && y.Suspect && x.Up && !x.Suspect && (x.Vouched || !y.Vouched) {
			for _, z := range c.nodes {
				if z.AliasOf == y {
					z.AliasOf = x
				}
			}
			x.AliasOf, y.AliasOf = nil, x
		}
	}
	for i, x := range order {
		changed = changed || x.AliasOf != prev[i]
	}
	return changed
}

// allAnsweredSince reports whether every vouched node's last check
// succeeded and began after t (one begun before may have missed a
// promotion): none that may be on a newer timeline is out of sight.
func (c *Core) allAnsweredSince(t time.Time) bool {
	for _, y := range c.nodes {
		if y.Vouched && (!y.Up || y.Suspect || !y.CheckBegan.After(t)) {
			return false
		}
	}
	return true
}

// histProof is a history file of timeline tl that server (named name)
// showed with no walreceiver, at at.
type histProof struct {
	tl     uint32
	at     time.Time
	server checker.ServerID
	name   string
}

// maxProofs bounds the proofs a node holds: one per server that showed a
// history file at it. Beyond it a proof of a newer timeline takes the place
// of the oldest timeline's; one of no newer timeline is not kept.
const maxProofs = 8

// histTL is the newest timeline x's proofs show, 0 with none.
func (x *Node) histTL() uint32 { return newestProof(x.proofs) }

// newestProof is the newest timeline proofs show, 0 with none.
func newestProof(proofs []histProof) uint32 {
	var tl uint32
	for _, p := range proofs {
		tl = max(tl, p.tl)
	}
	return tl
}

// answering returns the vouched node of the set where server s answers
// now and that ok accepts (nil: any), nil when there is none or s is not
// known.
func (c *Core) answering(s checker.ServerID, ok func(*Node) bool) *Node {
	if s == (checker.ServerID{}) {
		return nil
	}
	for _, y := range c.nodes {
		if y.Vouched && y.server() == s && (ok == nil || ok(y)) {
			return y
		}
	}
	return nil
}

// addProof adds p to x's proofs, merged with one of the same server, or
// of a server under the same name (taken for that server restarted).
func (x *Node) addProof(p histProof) {
	x.proofs = addProof(x.proofs, p)
}

func addProof(proofs []histProof, p histProof) []histProof {
	for i := range proofs {
		q := &proofs[i]
		if q.server == p.server || (q.name != "" && q.name == p.name && q.server.SystemID == p.server.SystemID) {
			if p.tl >= q.tl {
				*q = p
			}
			return proofs
		}
	}
	if len(proofs) < maxProofs {
		return append(proofs, p)
	}
	i := 0
	for j := range proofs {
		if proofs[j].tl < proofs[i].tl {
			i = j
		}
	}
	if p.tl > proofs[i].tl {
		proofs[i] = p
	}
	return proofs
}

// histLeftOver reports whether the history file of proof p, held at x,
// is left over: every vouched node answered checks begun since it was
// shown, no node of x's system identifier, vouched or not, shows that
// timeline, and x, where the server that showed it answers (or one under
// its name: the holder restarted), streams an older timeline from a
// vouched writable node of the set on an older timeline, or is listed by
// one. Streaming an older timeline alone says nothing: a replica left
// behind on the older branch streams it from the old master, and one
// behind the fork point shows the older timeline until it gets there,
// while the newer timeline's master may be out of sight.
func (c *Core) histLeftOver(x *Node, p histProof) bool {
	if !c.allAnsweredSince(p.at) {
		return false
	}
	for _, y := range c.nodes {
		if y.live() && y.Res.SystemID == x.Res.SystemID && bestTimeline(&y.Res) >= p.tl {
			return false
		}
	}
	if x.Res.Server() != p.server && (p.name == "" || x.Res.Name != p.name) {
		// Another server answers at x, under another name than the one
		// that showed the file (a name that moved; a restart of the
		// holder keeps its name): what it streams says nothing of the
		// file, and the server that showed it is checked nowhere in the
		// set (moveHistory).
		return false
	}
	// A walreceiver the check user may not see (the replication role)
	// tells nothing of the timeline it streams; a row by x's own name from
	// its address on a writable node of an older timeline does.
	hidden := x.Res.InRecovery && x.Res.ReceiveTimeline == 0 && x.Res.ReceiverHidden
	if !x.Res.InRecovery || x.Res.ReceiveTimeline == 0 && !hidden || x.Res.ReceiveTimeline >= p.tl {
		return false
	}
	for _, w := range c.nodes {
		if w == x || !w.Vouched || !w.live() || !w.mayWrite() || w.Res.Timeline >= p.tl {
			continue
		}
		if hidden && listedByName(x, w) || !hidden && c.followsWritable(x, w, p.tl, 4) {
			return true
		}
	}
	return false
}

// listedByName reports whether w shows one walsender row by x's name from
// x's address, and no other row by that name.
func listedByName(x, w *Node) bool {
	ip := x.clientIP()
	name, found := x.rowName(), 0
	if name == "" || ip == "" {
		return false
	}
	for _, r := range w.Res.Replicas {
		if r.ApplicationName == name {
			if r.ClientAddr != ip {
				return false
			}
			found++
		}
	}
	return found == 1
}

// moveHistory hands each history-file proof to the node of the set where
// the server that showed the file answers now (a name that moved): the
// proof goes with the server, and ends by that node's rules. While that
// server is checked nowhere the proof stays where it is. All proofs move
// at once, and a node holds one per server.
func (c *Core) moveHistory() {
	type move struct {
		p  histProof
		to *Node
	}
	var moving []move
	for _, x := range c.nodes {
		kept := x.proofs[:0]
		for _, p := range x.proofs {
			var to *Node
			if x.server() != p.server {
				to = c.answering(p.server, nil) // not x: its server is another
			}
			if to != nil {
				moving = append(moving, move{p, to})
			} else {
				kept = append(kept, p)
			}
		}
		clear(x.proofs[len(kept):])
		x.proofs = kept
	}
	for _, m := range moving {
		m.to.addProof(m.p)
	}
}

// maxPre bounds the records a node keeps before the cluster is learned:
// one per system identifier answering at it. Beyond it a record with no
// history file gives its place to a new one; otherwise nothing new is
// recorded (the cluster is learned at the first check of every trusted
// node, and what the node shows then counts from there on).
const maxPre = 16

// preRecord is what the servers of one system identifier showed at a node
// before the cluster was learned: the newest timeline, and the history
// files shown with no walreceiver.
type preRecord struct {
	sys    uint64
	tl     uint32
	proofs []histProof
}

// keepPre records x's last check, taken at at, in its pre-cluster
// records.
func (x *Node) keepPre(at time.Time) {
	r := &x.Res
	i := slices.IndexFunc(x.pre, func(p preRecord) bool { return p.sys == r.SystemID })
	if i < 0 {
		if len(x.pre) == maxPre {
			j := slices.IndexFunc(x.pre, func(p preRecord) bool { return len(p.proofs) == 0 })
			if j < 0 {
				return
			}
			x.pre = slices.Delete(x.pre, j, j+1)
		}
		x.pre = append(x.pre, preRecord{sys: r.SystemID})
		i = len(x.pre) - 1
	}
	p := &x.pre[i]
	p.tl = max(p.tl, bestTimeline(r))
	if r.InRecovery && r.ReceiveTimeline == 0 && r.HistoryTimeline != 0 {
		p.proofs = addProof(p.proofs, histProof{r.HistoryTimeline, at, r.Server(), r.Name})
	}
}

// followsWritable: x streams from w or is listed by w, or (cascading) does
// so with a vouched replica on an older timeline that follows w.
func (c *Core) followsWritable(x, w *Node, tl uint32, depth int) bool {
	if _, m := matchReplica(x, w.Res.Replicas, c.nodes); m == matchOne || streamsFrom(x, w) {
		return true
	}
	if depth == 0 {
		return false
	}
	for _, y := range c.nodes {
		if y == x || y == w || !y.Vouched || !y.live() || !y.Res.InRecovery || y.Res.ReceiveTimeline == 0 || y.Res.ReceiveTimeline >= tl {
			continue
		}
		if _, m := matchReplica(x, y.Res.Replicas, c.nodes); (m == matchOne || streamsFrom(x, y)) && c.followsWritable(y, w, tl, depth-1) {
			return true
		}
	}
	return false
}

// server is the identity of the server the node's last check reached; zero
// when it is not up or the checker does not tell.
func (x *Node) server() checker.ServerID {
	if !x.live() {
		return checker.ServerID{}
	}
	return x.Res.Server()
}

// anchored reports whether anything anchors trust: a pinned system
// identifier, or a trusted node in the set now or ever (once anchored,
// always: a set that loses its trusted nodes keeps what they vouched for,
// and believes no newcomer on its own word). With none (the user named no
// node the set has, and pinned nothing), every node is believed, as the
// first answer is the only thing to go by; that is logged once.
func (c *Core) anchored() bool {
	if c.cfg.SystemID != 0 || c.anchor {
		return true
	}
	for _, x := range c.nodes {
		if x.Trusted {
			c.anchor = true
			return true
		}
	}
	return false
}

// vouch marks the nodes whose claims count: trusted ones, those a master's
// walsender listed (see rebuild), and a writable node that a vouched
// replica says it streams from (its walreceiver connects to the node's
// address, on the node's timeline and cluster) and whose walsenders list
// that replica. What the writable node says of itself proves nothing: a
// server may lie about every field; the replica's word is what counts.
// Without an anchor, every node.
func (c *Core) vouch() {
	if !c.anchored() {
		if !c.anchorLogged && len(c.nodes) > 0 {
			c.anchorLogged = true
			c.log(slog.LevelWarn, "pgxha: no node of the set is named by the connection string and no system identifier is pinned: every node is believed; pin the cluster's system identifier (hasql_system_identifier)")
		}
		for _, x := range c.nodes {
			x.Vouched = true
		}
		return
	}
	for _, x := range c.nodes {
		if x.Trusted {
			x.Vouched = true
		}
	}
	for _, x := range c.nodes {
		if x.Vouched && !x.Trusted && namesakeOfTrusted(x, c.nodes) {
			// Vouched for by a row of its name from its machine while
			// no node the user named streamed there under that name (a
			// replica out of the set, or unseen): one does now, and the
			// row was as likely its. The vouch, which would carry a
			// claim of a promotion, goes; listed alone by that name
			// again, it is earned again.
			x.Vouched = false
		}
	}
	for _, w := range c.nodes {
		if w.Vouched || !w.mayWrite() || w.AliasOf != nil {
			continue
		}
		for _, y := range c.nodes {
			if y == w || !y.Vouched || !y.live() || !y.Res.InRecovery || y.Res.ReceiveTimeline == 0 ||
				y.Res.SystemID == 0 || y.Res.SystemID != w.Res.SystemID || y.Res.ReceiveTimeline != w.Res.Timeline ||
				!streamsFrom(y, w) {
				continue
			}
			if _, m := matchReplica(y, w.Res.Replicas, c.nodes); m == matchOne {
				w.Vouched = true
				break
			}
		}
	}
}

// namesakeOfTrusted reports whether a node the user named goes, on x's
// machine, by the name x goes by (its own walreceiver's, or what its
// server or its source calls it): another server, which x is not. It
// goes by the name its walreceiver streams as, and, while its checks
// fail, by the name its source gives it and the one it last streamed as
// (it may stream on).
func namesakeOfTrusted(x *Node, nodes []*Node) bool {
	if !x.live() || x.clientIP() == "" {
		return false
	}
	names := []string{x.rowName(), x.Name(), x.Res.Name}
	for _, y := range nodes {
		// Another address of y's server too (it may have copied y's
		// identity, which is plain SQL to read): what vouches for it is
		// y's being trusted, not its own.
		if y == x || !y.Trusted || x.clientIP() != y.clientIP() ||
			otherSystem(&y.Res, &x.Res) {
			continue
		}
		streamedAs := ""
		if y.Res.InRecovery && streams(y) && !y.Res.ReceiverHidden {
			streamedAs = y.Res.Name
		}
		if streamedAs != "" && slices.Contains(names, streamedAs) ||
			!y.live() && y.Member.Name != "" && slices.Contains(names, y.Member.Name) {
			return true
		}
	}
	return false
}

// streamsFrom reports whether replica y's walreceiver connects to w's
// address (its host as the set names it, or the address its checks
// reached, and its port).
func streamsFrom(y, w *Node) bool {
	h := y.Res.UpstreamHost
	if h == "" {
		return false
	}
	_, port, err := net.SplitHostPort(w.Addr)
	if err != nil {
		return false
	}
	p := y.Res.UpstreamPort
	if p == 0 {
		p = 5432
	}
	return strconv.Itoa(int(p)) == port && (h == w.Host || w.RemoteIP != "" && h == w.RemoteIP)
}

// elect picks the master: the one writable, vouched server of the cluster
// on its newest timeline. It learns the cluster (unless pinned: the
// system identifier of the first vouched writable server, or of every
// vouched node while none is writable, when they agree) and raises each
// vouched node's proof of the newest timeline: a replica on timeline 3
// proves that timeline 3 exists, and a writable node on timeline 2 is then
// stale.
func (c *Core) elect() {
	var writable []*Node
	for _, x := range c.nodes {
		x.Writable = x.mayWrite()
		x.Stale, x.StaleBehind = false, ""
		if x.Writable && x.AliasOf == nil {
			writable = append(writable, x)
		}
	}
	if c.cluster == 0 {
		// Until the cluster is learned, what vouched nodes show is kept
		// by system identifier (see newestOf), and taken as proved once
		// it is learned.
		for _, x := range c.nodes {
			if x.live() && x.Vouched && x.Res.SystemID != 0 {
				x.keepPre(x.ResAt)
			}
		}
		c.cluster = c.learnCluster(writable)
		if c.cluster != 0 {
			for _, x := range c.nodes {
				for _, p := range x.pre {
					if p.sys != c.cluster {
						continue
					}
					x.seenTL = max(x.seenTL, p.tl)
					for _, h := range p.proofs {
						x.addProof(h)
					}
				}
				x.pre = nil
			}
		}
	}
	c.moveHistory()
	for _, x := range c.nodes {
		if !x.live() || !x.Vouched || x.Res.SystemID == 0 || x.Res.SystemID != c.cluster {
			continue
		}
		x.seenTL = max(x.seenTL, bestTimeline(&x.Res))
		switch r := &x.Res; {
		case r.InRecovery && r.ReceiveTimeline == 0 && !r.ReceiverHidden:
			// No walreceiver to say what it streams, and its control
			// data may lag: a timeline whose history file it holds
			// exists all the same. (One that runs hidden from the check
			// user streams: a history file it holds may be one it could
			// not follow, as for a walreceiver that shows.)
			// Each server that shows one keeps a proof of its own.
			if r.HistoryTimeline != 0 {
				x.addProof(histProof{r.HistoryTimeline, x.ResAt, r.Server(), r.Name})
			}
		case len(x.proofs) > 0:
			// Fetched by a walreceiver from an upstream it could not
			// follow, or left by a promotion abandoned.
			x.proofs = slices.DeleteFunc(x.proofs, func(p histProof) bool { return c.histLeftOver(x, p) })
		}
	}
	var top []*Node
	var stale, staleBehind []string
	var staleMoved []bool
	newest := c.Timeline() // the newest timeline a stale node is measured against
	c.contenders = c.contenders[:0]
	for _, x := range c.nodes {
		x.Waiting = ""
	}
	for _, x := range writable {
		if c.unelectable(x) != "" {
			continue
		}
		c.contenders = append(c.contenders, x)
		tl := c.Timeline()
		if c.cluster == 0 {
			// Until the cluster is known no node's timeline counts in
			// Timeline (a trusted node's first check may be under way):
			// a vouched node of x's system identifier on a newer one
			// still shows x stale.
			tl = max(tl, c.newestOf(x.Res.SystemID))
		}
		if x.Res.Timeline < tl {
			newest = max(newest, tl)
			x.Stale = true
			stale = append(stale, x.Addr+" (timeline "+uitoa(x.Res.Timeline)+")")
			staleBehind = append(staleBehind, "")
			staleMoved = append(staleMoved, false)
			continue
		}
		if y := c.aheadReplica(x); y != nil {
			// A vouched replica of the cluster has WAL this node never
			// wrote: a newer timeline, or another branch of this one,
			// exists somewhere, although no node shows it (its master
			// died). It stays proven while that replica is in the set and
			// this node on this timeline: the evidence may fade (this node
			// writes on past the replica's position), the other branch's
			// writes are still not here.
			if b := (behind{id: x.ID, tl: x.Res.Timeline, server: x.Res.Server()}); !slices.Contains(y.ahead, b) {
				// At most maxAheadPerNode records of one node: a server
				// there that restarts (or says so) at every check would
				// add one each time. The oldest goes; the node itself
				// stays proven by the newer ones (provenBehind matches
				// its ID whatever the server).
				if i, k := oldestAhead(y.ahead, x.ID); k >= maxAheadPerNode {
					y.ahead = slices.Delete(y.ahead, i, i+1)
				}
				y.ahead = append(y.ahead, b)
			}
		}
		if y := c.provenBehind(x); y != nil {
			x.Stale, x.StaleBehind = true, y.Addr
			behind, moved := "behind replica "+y.Addr, grouped(x, y)
			if moved {
				// The replica that proved it answered at an address
				// that reaches this very server now: a name moved onto
				// it since.
				behind = "behind the replica that answered at " + y.Addr + " before this server did"
			}
			stale = append(stale, x.Addr+" (timeline "+uitoa(x.Res.Timeline)+", "+behind+")")
			staleBehind = append(staleBehind, y.Addr)
			staleMoved = append(staleMoved, moved)
			continue
		}
		if y := c.aheadUnordered(x); y != nil {
			// Not elected until a later check compares in order.
			x.Waiting = "replica " + y.Addr + " showed WAL past this node's position at a check that may have read it later; elected once a later check of this node compares them"
			continue
		}
		top = append(top, x)
	}
	staleDesc := strings.Join(stale, ", ")
	if staleDesc != c.staleReported {
		if staleDesc != "" {
			c.log(slog.LevelError, "pgxha: stale master: writable on an older timeline than the cluster's, or behind a replica on its own; no writes go to it",
				"nodes", staleDesc, "cluster_timeline", newest)
		}
		c.staleReported = staleDesc
	}
	c.elected = Election{Timeline: c.Timeline()}
	switch {
	case len(top) == 1 && top[0].unconfirmed != "":
		// No master for a moment (see Node.unconfirmed).
		top[0].Waiting = "the same server as " + top[0].unconfirmed + " by what it shows, which has not been checked since its server changed (a restart, or another writable server); elected once that is checked again"
	case len(top) == 1 && !c.everHadMaster && c.trustedUnchecked() && !c.confirmedByReplica(top[0]):
		// The first master waits until every node the user named has
		// answered a check or failed one, unless its walsenders list a
		// replica of the cluster: a server promoted apart, writable beside
		// replicas that hold WAL it never wrote, would take writes until
		// they are checked (see aheadUnordered).
		top[0].Waiting = "the first master waits until every node of the connection string has answered a check or failed one, unless a replica streams from it"
	case len(top) == 1:
		if top[0].Res.Timeline > c.ignoreAhead {
			c.ignoreAhead = 0
		}
		c.elected.Master = top[0]
		top[0].electedWritable = true
		if c.cluster != 0 && top[0].Res.SystemID == c.cluster && c.anchored() {
			// With no anchor every node is believed, a rogue too: what it
			// showed must not outlive it (it would block the writes for
			// good once it left).
			c.keptTL = max(c.keptTL, top[0].Res.Timeline)
		}
	case len(top) > 1:
		for _, x := range top {
			c.elected.SplitBrain = append(c.elected.SplitBrain, x.Addr)
		}
		c.elected.Timeline = top[0].Res.Timeline
	case len(stale) > 0:
		// Timeline says what the stale nodes are behind: before the
		// cluster is learned, the newest its vouched nodes showed.
		c.elected.Stale, c.elected.StaleBehind, c.elected.StaleMoved, c.elected.Timeline = stale, staleBehind, staleMoved, newest
	}
}

// newestOf is the newest timeline vouched nodes showed as servers of
// system identifier sys while the cluster was not learned (their
// timelines and history files).
func (c *Core) newestOf(sys uint64) uint32 {
	var tl uint32
	for _, x := range c.nodes {
		if !x.Vouched || sys == 0 {
			continue
		}
		for _, p := range x.pre {
			if p.sys == sys {
				tl = max(tl, p.tl, newestProof(p.proofs))
			}
		}
	}
	return tl
}

// trustedUnchecked reports whether a trusted node has not been checked
// yet.
func (c *Core) trustedUnchecked() bool {
	for _, x := range c.nodes {
		if x.Trusted && !x.Checked {
			return true
		}
	}
	return false
}

// learnCluster returns the system identifier of the cluster, 0 while it
// cannot tell yet. Not whoever answers first: that of the vouched writable
// servers that a replica confirms (their walsenders list a vouched replica
// of their system identifier), when they agree; else, once every trusted
// node has been checked, the one most vouched live nodes have, when one
// has the most.
func (c *Core) learnCluster(writable []*Node) uint64 {
	var id uint64
	agree, any := true, false
	for _, w := range writable {
		if !w.Vouched || w.Res.SystemID == 0 || !c.confirmedByReplica(w) {
			continue
		}
		any = true
		if id == 0 {
			id = w.Res.SystemID
		} else if w.Res.SystemID != id {
			agree = false
		}
	}
	if any && agree {
		return id
	}
	if c.trustedUnchecked() {
		return 0
	}
	var ids []uint64
	var counts []int
	for _, x := range c.nodes {
		if !x.live() || !x.Vouched || x.Res.SystemID == 0 || x.AliasOf != nil {
			continue
		}
		if i := slices.Index(ids, x.Res.SystemID); i >= 0 {
			counts[i]++
		} else {
			ids, counts = append(ids, x.Res.SystemID), append(counts, 1)
		}
	}
	best, tie := -1, false
	for i := range ids {
		switch {
		case best < 0 || counts[i] > counts[best]:
			best, tie = i, false
		case counts[i] == counts[best]:
			tie = true
		}
	}
	if best < 0 || tie {
		return 0
	}
	return ids[best]
}

// confirmedByReplica reports whether w's walsenders list a live, vouched
// replica of w's system identifier.
func (c *Core) confirmedByReplica(w *Node) bool {
	for _, y := range c.nodes {
		if y == w || !y.Vouched || !y.live() || !y.Res.InRecovery || y.Res.SystemID != w.Res.SystemID || y.AliasOf != nil {
			continue
		}
		if _, mt := matchReplica(y, w.Res.Replicas, c.nodes); mt == matchOne || mt == matchAmbiguous {
			return true
		}
	}
	return false
}

// unsaidSystemID is why a node that does not say its system identifier
// counts for nothing while the cluster's is pinned: any server could be
// hiding another.
func unsaidSystemID(pinned uint64) string {
	return "does not say its system identifier; the cluster's is pinned to " + strconv.FormatUint(pinned, 10)
}

// unelectable says why x, a writable node, can never be master now: of
// another cluster, or nothing vouches for it. "" when it can.
func (c *Core) unelectable(x *Node) string {
	if c.cfg.SystemID != 0 && x.Res.SystemID == 0 {
		return unsaidSystemID(c.cfg.SystemID)
	}
	if c.cluster != 0 && x.Res.SystemID != 0 && x.Res.SystemID != c.cluster {
		return "another cluster: system identifier " + strconv.FormatUint(x.Res.SystemID, 10) + ", the cluster's is " + strconv.FormatUint(c.cluster, 10)
	}
	if !x.Vouched {
		return "writable, but nothing vouches for it: not named by the connection string and no replica of the cluster streams from it"
	}
	return ""
}

// aheadReplica returns a vouched replica of the cluster that is ahead of
// w, a writable node (see aheadOf), or nil. After ForgetTimeline it is nil
// until a master is elected on a newer timeline.
func (c *Core) aheadReplica(w *Node) *Node {
	if c.ignoreAhead > 0 && w.Res.Timeline <= c.ignoreAhead {
		return nil
	}
	for _, y := range c.nodes {
		if !vouchedReplicaOf(y, w) {
			continue
		}
		// Only WAL of the writable node's timeline or a newer one says
		// so: a replica left on an older timeline may hold WAL past the
		// point where the newer one forked off (never acknowledged).
		if bestTimeline(&y.Res) >= w.Res.Timeline && y.aheadOnTimelineOf(w) && !c.followsOtherWritable(y, w) {
			return y
		}
	}
	return nil
}

// vouchedReplicaOf reports whether y is a live, vouched replica of w's
// system identifier, not another's alias: one whose WAL proves something
// of w (see aheadReplica, aheadUnordered).
func vouchedReplicaOf(y, w *Node) bool {
	return y != w && y.AliasOf == nil && y.live() && y.Vouched && y.Res.InRecovery &&
		y.Res.SystemID != 0 && y.Res.SystemID == w.Res.SystemID
}

// aheadUnordered returns, at the first check that found w's server
// writable (not elected yet), a vouched replica of the cluster that w's
// walsenders do not list and that showed, at a check that had not ended
// when w's began, WAL it replayed on w's timeline or a newer one past w's
// position; nil when none did. Which was read first is not known: the
// replica's WAL may be w's, written after w's position was read, or WAL of
// a branch w never had (w was promoted apart, and the master the replica
// followed died). w is not elected until a check of it that begins later
// compares them in order (see aheadReplica): taking writes meanwhile, w
// could write past that position and hide the proof.
func (c *Core) aheadUnordered(w *Node) *Node {
	if w.derived == RoleMaster || w.electedWritable || !w.CheckBegan.Equal(w.writableSince) || c.ignoreAhead > 0 && w.Res.Timeline <= c.ignoreAhead {
		return nil // elected already: see aheadReplica at its next check
	}
	for _, y := range c.nodes {
		if !vouchedReplicaOf(y, w) {
			continue
		}
		p := y.pos
		if !p.at.After(w.CheckBegan) || p.tl < w.Res.Timeline || p.replayed <= w.Res.LSN || c.followsOtherWritable(y, w) {
			continue
		}
		if _, mt := matchReplica(y, w.Res.Replicas, c.nodes); mt == matchOne || mt == matchAmbiguous {
			continue // streams from w
		}
		return y
	}
	return nil
}

// provenBehind returns a replica in the set that was found ahead of w on
// w's present timeline, or nil. The proof is dropped once the replica
// streams from w on that timeline and is not ahead of it, w's server not
// the one proven behind: w's present server has its WAL (w's name moved
// onto the master the replica follows). Streaming from the very server it
// proved behind tells nothing: on two branches of one timeline number
// PostgreSQL streams from whatever position the replica asks for, and the
// server still lacks the WAL the replica held past it. Nothing else drops it: not
// w writing on past the replica's position, nor a restart, nor another
// server answering at w for a while. A check user without pg_monitor
// cannot see whom the replica streams from: the proof then holds until
// the replica restarts or leaves the set, or ForgetTimeline, also when the
// server it was made against has left w's address (a name moved off a
// server promoted apart, back onto the true master): which of the two a
// server of another identity at the address is, a restart or another
// server, nothing it shows tells.
func (c *Core) provenBehind(w *Node) *Node {
	for _, y := range c.nodes {
		for i, b := range y.ahead {
			sameServer := b.server != (checker.ServerID{}) && b.server == w.Res.Server()
			if b.id != w.ID && !sameServer || b.tl != w.Res.Timeline || c.ignoreAhead > 0 && w.Res.Timeline <= c.ignoreAhead {
				continue
			}
			if !sameServer && c.followsNow(y, w) {
				y.ahead = slices.Delete(y.ahead, i, i+1)
				break
			}
			return y
		}
	}
	return nil
}

// followsNow reports whether y, the replica that made a proof against w,
// streams from w now on w's timeline, not ahead of it: its own check finds
// a walreceiver on that timeline, and w's walsenders (read since y's
// server started) list it, by its name, from its own address. That listing
// by w, a vouched node, is what vouches for a replica: y need not be
// vouched for still. Its vouching lapses when another server answers at
// its address, and when its own server answers there again (its proofs
// given back) only a master's listing earns it again: a proof that keeps
// the one writable node stale would then keep every node from the role
// that could list it, for good.
func (c *Core) followsNow(y, w *Node) bool {
	if !y.live() || !y.Res.InRecovery || y.Res.ReceiveTimeline != w.Res.Timeline || y.aheadOnTimelineOf(w) {
		return false
	}
	return listedFrom(y, rowsFor(y, w), c.nodes)
}

// followsOtherWritable reports whether y is listed by the walsenders of a
// writable node other than w: its WAL past w's position is that node's (two
// masters on one timeline number, promoted apart), which proves a split
// brain, not a newer timeline.
func (c *Core) followsOtherWritable(y, w *Node) bool {
	for _, z := range c.nodes {
		if z == w || z == y || !z.Writable || !z.Vouched || z.AliasOf != nil || z.Res.SystemID != y.Res.SystemID {
			continue
		}
		if _, mt := matchReplica(y, z.Res.Replicas, c.nodes); mt == matchOne || mt == matchAmbiguous {
			return true
		}
	}
	return false
}

// reportSplitBrain logs a split brain when it starts and when it ends.
func (c *Core) reportSplitBrain() {
	e := &c.elected
	desc := ""
	if len(c.contenders) > 1 {
		parts := make([]string, len(c.contenders))
		for i, x := range c.contenders {
			parts[i] = x.Addr + " (timeline " + uitoa(x.Res.Timeline) + ")"
		}
		desc = strings.Join(parts, ", ")
	}
	if desc == c.splitBrain {
		return
	}
	switch {
	case desc == "":
		c.log(slog.LevelInfo, "pgxha: split brain over", "was", c.splitBrain)
	case e.Master == nil:
		c.log(slog.LevelError, "pgxha: split brain: writes refused", "writable", desc)
	default:
		c.log(slog.LevelWarn, "pgxha: split brain: writes go to the newest timeline", "writable", desc, "master", e.Master.Addr)
	}
	c.splitBrain = desc
	c.ready.SplitBrain, c.ready.SplitBrainChanged = desc != "", true
}

// roleChanged logs and counts a role change. Until a replica's role was
// derived with a master known, a change between replica roles completes
// its first role and is logged, like the first, at Debug.
func (c *Core) roleChanged(x *Node, from, to Role, prevMaster *Node) {
	rc := RoleChange{ID: x.ID, From: from, To: to}
	attrs := []any{"addr", x.Addr, "name", x.Name(), "from", from.String(), "to", to.String()}
	switch {
	case to == RoleMaster && !c.everHadMaster:
		c.everHadMaster = true
		c.log(slog.LevelDebug, "pgxha: master found", append(attrs, "timeline", x.Res.Timeline)...)
	case to == RoleMaster:
		c.log(slog.LevelWarn, "pgxha: new master", append(attrs, "timeline", x.Res.Timeline)...)
		rc.Failover = true
	case from == RoleUnknown && x.LastErr == nil, !x.settled && from.IsReplica() && to.IsReplica():
		c.log(slog.LevelDebug, "pgxha: node found", attrs...)
	default:
		c.log(slog.LevelInfo, "pgxha: role changed", attrs...)
	}
	c.ready.RoleChanges = append(c.ready.RoleChanges, rc)
}

// replicaRole derives the role of x, a replica that is up: whether it
// follows the master, and whether the master waits for it.
func (c *Core) replicaRole(x, master *Node, masterKnown bool, prev Role, prevDetached string, follows []*Node) Role {
	if !masterKnown {
		// No master to ask: what proves it does not follow the cluster's
		// newest timeline still counts; otherwise it keeps what it was
		// (a replica that was detached stays so until a master lists it),
		// but for a claim that the master waits for it.
		if why := c.foreign(x); why != "" {
			x.Detached = why
			return RoleDetached
		}
		if x.SyncState != "" && (max(bestTimeline(&x.Res), x.Res.HistoryTimeline) > x.syncTL || x.syncRead.Before(x.backSince)) {
			// Said by a master of an older timeline than the one it
			// follows now: the last master (promoted since) never said it.
			// Not an older one: with no walreceiver a replica's timeline
			// is its last restartpoint's, which may be older. Or said of
			// the server's run before (a down or restart seen since, at
			// any of its addresses).
			x.SyncState = ""
		}
		if prev == RoleDetached && c.lostWithMaster(x) {
			// Detached in the master's last moments, as the master
			// went down: its walreceiver stopped with the master, not
			// before; it serves reads as the replicas that were
			// still listed do.
			x.unlisted, x.SyncState = false, ""
			x.SyncUnknown = syncUnknownNoMaster
			return RoleReplica
		}
		if prev == RoleDetached {
			x.Detached = prevDetached
			return RoleDetached
		}
		if prev == RoleSyncReplica || prev == RoleQuorumReplica {
			// Whether the master waits for it is not known: a master out
			// of sight may have stopped (its walreceiver stopped, another
			// standby named synchronous) and acknowledge commits it lacks.
			// SyncState stays what the last master said.
			x.SyncUnknown = syncUnknownNoMaster
			return RoleReplica
		}
		if prev == RoleReplica {
			x.SyncUnknown = syncUnknownNoMaster
		}
		if prev.IsReplica() {
			return prev
		}
		if !x.Vouched {
			x.Detached = "nothing vouches for it (not named by the connection string) and no master is known to list it"
			return RoleDetached
		}
		// First seen while no master is known: it serves reads, its lag
		// and sync state unknown until a master says more, unless even
		// its restartpoint's timeline is older than the cluster's. A
		// history file of the cluster's timeline does not save it: a
		// replica left behind on the older branch holds it too.
		if r := &x.Res; r.ReceiveTimeline == 0 && r.Timeline != 0 && r.Timeline < c.Timeline() {
			x.Detached = "on timeline " + uitoa(r.Timeline) + ", older than the cluster's " + uitoa(c.Timeline()) + ", and no master to say whether it follows"
			return RoleDetached
		}
		x.SyncUnknown = syncUnknownNoMaster
		return RoleReplica
	}
	x.unlisted = false
	if !containsNode(follows, x) {
		x.Detached = c.attached(x, master, follows)
		x.unlisted = strings.HasPrefix(x.Detached, detachedUnlisted)
		return RoleDetached
	}
	entry, match := matchReplica(x, master.Res.Replicas, c.nodes)
	x.SyncState = ""
	switch match {
	case matchNone:
		// Listed by a replica it cascades from: never waited for.
		return RoleAsyncReplica
	case matchAmbiguous:
		x.SyncUnknown = "more than one walsender on the master reports application_name " + strconv.Quote(x.Name()) +
			"; give each replica its own (cluster_name or primary_conninfo's application_name) or name it with WithReplicaName"
		if a := doubtfulRow(x, master.Res.Replicas, c.nodes); a != "" {
			x.SyncUnknown = "the master's walsender row by application_name " + strconv.Quote(x.rowName()) +
				" comes from " + a + ", the address of a member nothing vouches for that may go by that name: it may be that member's"
		}
		if upstreamsOnlyRow(x, master.Res.Replicas, c.nodes) {
			x.SyncUnknown = "the master's one walsender row by application_name " + strconv.Quote(x.Name()) +
				" comes from " + x.Res.UpstreamHost + ", the server the replica streams from, not listed in the node set: it may be that server's; give each replica its own application_name, or list that server"
		}
		return RoleReplica
	case matchUnnamed:
		x.SyncUnknown = "the replica's application_name is unknown and the master's walsenders show no addresses; set cluster_name, or grant pg_monitor to the check user"
		return RoleReplica
	}
	if entry.SyncState == "sync" || entry.SyncState == "quorum" {
		// The row is the walsender that served it before it went down or
		// restarted, or was found by a name the node did not go by then:
		// the master may have named another standby since and
		// acknowledged commits it lacks. Known at the master's next read
		// (asked for: see WantReplicas).
		switch {
		case master.replicasBegan.Before(x.namedSince):
			x.SyncUnknown = syncUnknownRenamed
			return RoleReplica
		case !x.backSince.IsZero() && master.replicasBegan.Before(x.backSince) || !x.streamSince.IsZero() && master.replicasBegan.Before(x.streamSince) ||
			master.replicasBegan.Before(x.CheckBegan) && (c.cascades(x, master) || !streams(x)):
			x.SyncUnknown = syncUnknownOldRows
			return RoleReplica
		}
	}
	x.SyncState, x.syncTL, x.syncRead = entry.SyncState, master.Res.Timeline, master.replicasBegan
	switch entry.SyncState {
	case "sync":
		return RoleSyncReplica
	case "quorum":
		return RoleQuorumReplica
	case "":
		x.SyncUnknown = "the check user may not read pg_stat_replication's sync_state; grant it pg_monitor"
		return RoleReplica
	}
	return RoleAsyncReplica
}

// cascades reports whether x's walreceiver, at its last check, connects
// to a node of the set that is a replica, not master's server: a row of
// x the master's walsenders showed before is of a stream x left.
func (c *Core) cascades(x, master *Node) bool {
	for _, y := range c.nodes {
		// Live or not: x's check shows where its walreceiver connected
		// then, and an upstream that has gone down since does not make
		// the master's older row x's.
		if y != x && y != master && y.Res.InRecovery && y.Res.Server() != master.Res.Server() && streamsFrom(x, y) {
			return true
		}
	}
	return false
}

// syncUnknownNoMaster is why a replica's sync state is unknown while no
// master is known: not worth a warning.
const syncUnknownNoMaster = "no master known to tell"

// syncUnknownOldRows is why a replica back up (or restarted) is not sync
// until the master's walsenders are read again: not worth a warning.
const syncUnknownOldRows = "the master's walsenders were last read before it came back"

// syncUnknownRenamed is why a replica its source named anew is not sync
// until the master's walsenders are read again: not worth a warning.
const syncUnknownRenamed = "the master's walsenders were last read before the replica took its name"

// foreign says why x cannot follow the cluster's newest timeline whatever
// the master: another system identifier, or a timeline below the newest
// seen. "" when nothing says so.
func (c *Core) foreign(x *Node) string {
	r := &x.Res
	if c.cfg.SystemID != 0 && r.SystemID == 0 {
		return unsaidSystemID(c.cfg.SystemID)
	}
	if c.cluster != 0 && r.SystemID != 0 && r.SystemID != c.cluster {
		return "another cluster: system identifier " + strconv.FormatUint(r.SystemID, 10) + ", the cluster's is " + strconv.FormatUint(c.cluster, 10)
	}
	if tl := bestTimeline(r); r.ReceiveTimeline != 0 && tl < c.Timeline() {
		return "left behind on timeline " + uitoa(tl) + "; the cluster is on timeline " + uitoa(c.Timeline())
	}
	return ""
}

// attached says why x does not follow master, "" when it does: same system
// identifier, on the master's timeline, not ahead of it, listed by its
// walsenders or by those of a replica in follows (cascading).
func (c *Core) attached(x, master *Node, follows []*Node) string {
	r, mr := &x.Res, &master.Res
	if why := c.foreign(x); why != "" {
		return why
	}
	if otherSystem(r, mr) {
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
	switch _, match := matchReplica(x, rowsFor(x, master), c.nodes); match {
	case matchOne:
		return ""
	case matchAmbiguous:
		// A row that may be another node's proves something of this one
		// only when something vouches for it: a server nothing vouches
		// for that takes the name of one of our replicas (the check user
		// lacking pg_monitor, rows show no address) is not listed by it.
		if x.Vouched && ambiguousListsIt(x, master, rowsFor(x, master), c.nodes) {
			return ""
		}
		if x.Vouched {
			return "the master lists fewer walsenders by its name " + strconv.Quote(x.rowName()) +
				" than nodes go by it, none from its address: it may be the one that streams from nobody; give each replica its own application_name, or name it with WithReplicaName"
		}
		return "its name " + strconv.Quote(x.Name()) + " is another node's too, and nothing vouches for this one (not in the connection string, not listed from its own address)"
	case matchUnnamed:
		// Nothing to match it by: its own walreceiver must show the
		// master's timeline.
		if r.ReceiveTimeline == mr.Timeline {
			return ""
		}
		return "cannot tell whether it streams from the master: its application_name is unknown and its timeline hidden; set cluster_name, or grant pg_monitor to the check user"
	}
	for _, y := range follows {
		if _, match := matchReplica(x, rowsFor(x, y), c.nodes); match == matchOne || match == matchAmbiguous && x.Vouched && ambiguousListsIt(x, y, rowsFor(x, y), c.nodes) {
			return ""
		}
	}
	if hiddenRows(mr.Replicas) {
		return "not found among the master's walsenders by the name " + strconv.Quote(x.Name()) +
			"; the check user lacks pg_monitor, so the replica's own application_name (primary_conninfo) is hidden: grant pg_monitor, make cluster_name the same, or name it with WithReplicaName"
	}
	if r.ReceiveTimeline == 0 && r.Timeline < mr.Timeline {
		return detachedUnlisted + ", last on timeline " + uitoa(r.Timeline)
	}
	return detachedUnlisted
}

// detachedUnlisted is why a replica no walsender of the master lists is
// detached.
const detachedUnlisted = "not streaming from the master (not in its pg_stat_replication)"

// lostWithMaster reports whether x, detached because the master's
// walsenders no longer listed it, stopped following only in the master's
// last moments: the master it followed is down now, and its last good
// check ended within twice ReplicasMaxAge of the one that last found x
// following it (the master's crash ends its walsenders, and the
// replica's walreceiver may see it first). Nothing else it shows may
// set it apart: not another cluster's, not on an older timeline than the
// cluster's, and streaming, if at all, on the timeline the master was on;
// vouched for, and the server the master found following it (another at
// its address since is not: see Core.CheckOK).
func (c *Core) lostWithMaster(x *Node) bool {
	m := c.Node(x.followedBy)
	if !x.unlisted || !x.Vouched || m == nil || m == x || m.live() || x.followedAt.IsZero() ||
		m.ResAt.Sub(x.followedAt) > 2*ReplicasMaxAge || c.foreign(x) != "" {
		return false
	}
	r := &x.Res
	if otherSystem(r, &m.Res) {
		return false
	}
	if r.ReceiveTimeline != 0 && r.ReceiveTimeline != m.Res.Timeline || r.Timeline != 0 && r.Timeline < c.Timeline() {
		return false
	}
	return bestTimeline(r) <= m.Res.Timeline
}

// rowsFor returns w's walsender rows as evidence of x: none when they are
// a reused list (see checker.Result.ReplicasCached) read before x's server
// replaced another, for a row of the one before says nothing of this one.
// (Rows read by w's last check itself are taken as they were before lists
// were reused: the check that follows x's change reads them again.)
func rowsFor(x, w *Node) []checker.Replica {
	if x.replaced && w.Res.ReplicasCached && w.replicasBegan.Before(x.serverSince) {
		return nil
	}
	return w.Res.Replicas
}

// measureLag measures x's lag behind master. Bytes: the master's position
// less the replica's replayed one. Time: the master's replay_lag for it,
// the age of the oldest of the master's positions the replica has not
// replayed, and, while WAL is pending that no recorded position covers,
// the age of its last replayed transaction, which bounds the lag from
// above. With none of them the lag is unknown, never 0.
func (c *Core) measureLag(x, master *Node, historyOK bool, now time.Time) {
	mres := &master.Res
	entry, match := matchReplica(x, mres.Replicas, c.nodes)
	if match != matchOne || x.replaced && master.replicasBegan.Before(x.serverSince) || master.replicasBegan.Before(x.namedSince) {
		// A row read before x's server replaced another is the one
		// before's: its replay position and lag are not x's (a standby
		// restarted after a crash opens behind what it had replayed). So
		// is one read before x went by the name that found it.
		entry = checker.Replica{}
	}
	replay := max(x.Res.LSN, entry.ReplayLSN)
	// When replay was read: at x's check, or at the master's check that
	// read its walsenders (the rows may be an earlier check's). x's own:
	// as late as it can have been, the answer less the usual way back.
	// Counting to the answer would add the way back to the lag (a replica
	// 150ms away read 150ms behind by that alone); to the middle of a
	// check that took long (it opened a connection first) would take the
	// read for earlier than it can have been, and the lag for less.
	readAt := x.readAt
	if entry.ReplayLSN > x.Res.LSN {
		// Read by the statement that read the master's position: at the
		// same time as its sample.
		readAt = master.CheckBegan.Add(master.Latency / 2)
		if mres.ReplicasCached {
			readAt = master.replicasBegan
		}
	}
	x.LagBytes = 0
	if mres.LSN > replay {
		x.LagBytes = int64(mres.LSN - replay)
	}
	x.LagAt = now
	if x.LagBytes == 0 {
		x.Lag, x.LagKnown = 0, true
		return
	}
	lag, known := time.Duration(0), false
	if entry.HasReplayLag {
		lag, known = entry.ReplayLag, true
	}
	covered := false
	if historyOK {
		h, cv := c.history.lagFor(replay, now, readAt)
		lag, covered = max(lag, h), cv
		known = known || cv
	}
	if !covered && !x.Res.ReplayTime.IsZero() && !x.Res.ServerTime.IsZero() {
		// WAL is pending beyond what the history covers: nothing it lacks
		// is older than its last replayed transaction.
		lag, known = max(lag, x.Res.ServerTime.Sub(x.Res.ReplayTime)), true
	}
	x.Lag, x.LagKnown = lag, known
}

// posBefore returns the node's WAL position as of its latest check that
// ended no later than t.
func (x *Node) posBefore(t time.Time) (walPos, bool) {
	switch {
	case !x.pos.at.IsZero() && !x.pos.at.After(t):
		return x.pos, true
	case !x.prevPos.at.IsZero() && !x.prevPos.at.After(t):
		return x.prevPos, true
	}
	return walPos{}, false
}

// aheadOf reports whether x, a replica, had WAL that w, a writable node, had
// not written when w's last check began, at a check of x that ended before
// that: x has WAL from another timeline (or another server).
func (x *Node) aheadOf(w *Node) bool {
	p, ok := x.posBefore(w.CheckBegan)
	return ok && p.lsn > w.Res.LSN
}

// aheadOnTimelineOf is aheadOf with the position taken on w's timeline or
// a newer one. A position read before w's server was first seen counts
// what x had replayed only: w may be a server that restarted since, after
// a crash that tore a record whose start x had received (the server
// writes over it), while every whole record x replayed, the server, which
// keeps all it flushed, still has.
func (x *Node) aheadOnTimelineOf(w *Node) bool {
	p, ok := x.posBefore(w.CheckBegan)
	if !ok || p.tl < w.Res.Timeline {
		return false
	}
	if p.at.Before(w.serverSince) {
		return p.replayed > w.Res.LSN
	}
	return p.lsn > w.Res.LSN
}

func containsNode(nodes []*Node, x *Node) bool {
	for _, n := range nodes {
		if n == x {
			return true
		}
	}
	return false
}

// listedFrom reports whether rows (a node's pg_stat_replication) list x
// by a name no other node goes by, connected from x's own address: a
// server that takes the name of a replica that is down is not listed from
// its address. Rows that hide addresses (no pg_monitor) vouch for nothing.
func listedFrom(x *Node, rows []checker.Replica, nodes []*Node) bool {
	entry, mt := matchReplica(x, rows, nodes)
	if mt != matchOne || entry.ClientAddr == "" {
		return false
	}
	return x.atAddr(entry.ClientAddr)
}

// nameShared reports whether another node of the cluster goes by name too:
// not the same server, not foreign or left behind, and, when x is vouched
// for, vouched for too (a namesake nothing vouches for changes nothing
// about our nodes); for an x nothing vouches for, a member named so whose
// checks fail too.
func nameShared(x *Node, name string, nodes []*Node, privileged bool) bool {
	for _, y := range nodes {
		// A member the source gave the name, whose checks fail, still
		// goes by it: a server nothing vouches for that says it (one on
		// the down replica's machine, a member of no name of its own)
		// does not take its row. So does a vouched replica by the name
		// its last check showed it streaming as (a host of the
		// connection string the source has not named, or named
		// otherwise): it may stream on while its checks fail. Rows
		// that show addresses tell its machine's from another's; rows
		// that hide them do not.
		// And a vouched replica whose last check found no walreceiver
		// still goes by its name: its check and the master's read are
		// not at one instant, and a walreceiver that restarts (a
		// network blip, a timeout) may be back in the row read since.
		// A master that was vouched for goes by its name too: demoted
		// (a failover, pg_rewind), it may stream from the new master
		// before a check of its own shows it. One that still answers
		// writable counts only where rows show it is on x's machine:
		// the rows may be its own, and it is no row of them.
		if !x.Vouched && y != x && y.AliasOf == nil && x.AliasOf != y && (!privileged || mayShareAddr(x, y)) &&
			(!y.live() && (y.Member.Name == name || y.Vouched && y.rowName() == name) ||
				y.live() && y.Vouched && y.rowName() == name && (y.Res.InRecovery && !streams(y) || !y.Res.InRecovery && privileged)) {
			return true
		}
		if sharesName(x, y, name, privileged) {
			return true
		}
	}
	return false
}

// mayShareAddr reports whether x and y may connect from one address: the
// same host, or one of them with no known address (a host name never
// reached). A row from x's own address that is not y's is not y's
// walsender, whatever the name (see nameShared).
func mayShareAddr(x, y *Node) bool {
	a, b := x.clientIP(), y.clientIP()
	return a == "" || b == "" || a == b || x.Host == y.Host
}

// sharesName reports whether y, another node of the cluster, goes by name
// too (see nameShared).
func sharesName(x, y *Node, name string, privileged bool) bool {
	return y != x && y.AliasOf != x && x.AliasOf != y && y.AliasOf == nil &&
		y.live() && y.Res.InRecovery && y.rowName() == name && (y.Vouched || !x.Vouched) &&
		// One whose check found no walreceiver, hidden or not, streams
		// from nobody: no walsender row is its.
		!((privileged || !y.Res.ReceiverHidden) && !streams(y)) &&
		!otherSystem(&y.Res, &x.Res) &&
		// A y on an older timeline than x is not the row's, by x's word:
		// that of a node nothing vouches for does not count where the
		// row may be y's (y's walreceiver may have switched to the new
		// master since its check, in a failover).
		(!leftBehind(y, x) || !x.Vouched && (!privileged || mayShareAddr(x, y)))
}

// ambiguousListsIt reports whether rows, w's walsenders, on which x's
// name is ambiguous (matchAmbiguous), still list x: there are at least as
// many rows by its name as nodes that go by it (each may have its own),
// counting those other live, vouched nodes of the set list (a replica of
// the name that cascades from one of them has its row there, not on w),
// or, with fewer, one of w's comes from x's own address. With fewer rows
// than nodes of the name and none from x's address, one of those nodes at
// least streams from nobody here, and nothing tells that it is not x.
func ambiguousListsIt(x, w *Node, rows []checker.Replica, nodes []*Node) bool {
	name := x.rowName()
	privileged := shownAddrs(rows)
	count, own := 0, false
	for _, r := range rows {
		if r.ApplicationName == name && couldBeRow(x, r) {
			count++
			own = own || x.atAddr(r.ClientAddr)
		}
	}
	for _, y := range nodes {
		if y == w || y.AliasOf != nil || w.AliasOf == y || !y.live() || !y.Vouched || !y.Res.InRecovery ||
			otherSystem(&y.Res, &x.Res) {
			continue
		}
		for _, r := range y.Res.Replicas {
			if r.ApplicationName == name && couldBeRow(x, r) {
				count++
			}
		}
	}
	claimants := 1
	for _, y := range nodes {
		if sharesName(x, y, name, privileged) {
			claimants++
		}
	}
	return count >= claimants || own || upstreamsOnlyRow(x, rows, nodes)
}

// shownAddrs reports walsender rows that show client addresses: the check
// user may see replication details (pg_monitor), a replica's walreceiver
// included.
func shownAddrs(rows []checker.Replica) bool {
	for _, r := range rows {
		if r.ClientAddr != "" {
			return true
		}
	}
	return false
}

// rowName is the application_name x's walsender row goes by: that of its
// own walreceiver when its check saw it (its primary_conninfo's, else its
// cluster_name: what the upstream shows), else x's name (a member's name,
// WithReplicaName's, its server's). For a member the user named (a host of
// the connection string, trusted) or one vouched for, a name a source gave
// is not taken over what its server streams as: two servers that swapped
// addresses while the source still lists the old names would take each
// other's rows, the async one claimed sync. For a member nothing vouches for, its server's
// word does not name its row: a server beside a replica whose checks fail
// would take that replica's row by saying its name.
func (x *Node) rowName() string {
	if r := &x.Res; (x.Member.Trusted || x.Vouched) && r.InRecovery && r.UpstreamHost != "" && !r.ReceiverHidden && r.Name != "" {
		return r.Name
	}
	return x.Name()
}

// streams reports whether the node's check found a walreceiver.
func streams(x *Node) bool { return x.Res.ReceiveTimeline != 0 || x.Res.UpstreamHost != "" }

// couldBeRow reports whether walsender row r may be x's, beyond its name:
// a row that shows its client's address (the check user has pg_monitor)
// is not that of a replica whose own check, with the same rights, found no
// walreceiver (one that runs hidden from the check user, the replication
// role, may be it); and a node nothing vouches for must connect from the
// row's address (a server that takes a replica's name is not listed from
// its own).
func couldBeRow(x *Node, r checker.Replica) bool {
	if r.ClientAddr == "" {
		return true
	}
	if x.Res.InRecovery && !streams(x) && !x.Res.ReceiverHidden {
		return false
	}
	if x.Vouched {
		return true
	}
	ip := x.clientIP()
	return ip == "" || r.ClientAddr == ip
}

// leftBehind reports whether y streams an older timeline than x does: it
// cannot be the row of x's master that names x.
func leftBehind(y, x *Node) bool {
	return y.Res.ReceiveTimeline != 0 && x.Res.ReceiveTimeline != 0 && bestTimeline(&y.Res) < bestTimeline(&x.Res)
}

// statesHidden reports walsender rows that show addresses but no sync
// state: the check user is the walsenders' role, without
// pg_read_all_stats (pg_stat_get_wal_senders hides all but the pid from
// it, pg_stat_activity does not hide a role's own backends).
func statesHidden(rows []checker.Replica) bool {
	if !shownAddrs(rows) {
		return false
	}
	for _, r := range rows {
		if r.SyncState != "" {
			return false
		}
	}
	return true
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
// by address when only one row has it, under a name that could be x's, and
// no other node shares the address.
func matchReplica(x *Node, rows []checker.Replica, nodes []*Node) (checker.Replica, replicaMatch) {
	name := x.rowName()
	if name != "" {
		var found checker.Replica
		count, doubtful := 0, false
		for _, r := range rows {
			if r.ApplicationName != name || !couldBeRow(x, r) {
				continue
			}
			if other, unvouched := fromOtherNode(x, r, nodes); other {
				doubtful = doubtful || unvouched
				continue
			}
			found = r
			count++
		}
		switch {
		case doubtful && (count == 0 || !ownAddr(x, found.ClientAddr)):
			// A row by its name comes from the machine of a member
			// nothing vouches for that may go by that name: the row may
			// be that member's, or x's streaming from there (another
			// network of its machine); x's is not known to be another.
			return checker.Replica{}, matchAmbiguous
		case count == 1 && upstreamsRow(x, found, nodes):
			// It may be the row of the standby x cascades from, under
			// the same name: x follows, its sync state and lag are not
			// the row's.
			return checker.Replica{}, matchAmbiguous
		case count == 1 && !nameShared(x, name, nodes, shownAddrs(rows)):
			return found, matchOne
		case count >= 1:
			// Two rows of one name, or one row whose name two nodes go by
			// (a replica cascading from another with the same name): the
			// row may be either's.
			return checker.Replica{}, matchAmbiguous
		}
	}
	ip := x.clientIP()
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
	// A check user that is the replication role (without
	// pg_read_all_stats) sees its walsenders' addresses (pg_stat_activity
	// shows a role its own backends) but no sync state, and no detail of a
	// replica's walreceiver: the replica's Name is then its cluster_name,
	// not primary_conninfo's application_name its row goes by. A vouched
	// replica whose walreceiver runs hidden takes the one row from its
	// address under any name then; one with none running streams from
	// nobody, whatever another client of the role does from its host.
	// Not while another node of the set lists x by its own name from its
	// address: the hidden walreceiver streams from there (a stale master
	// x still follows, say), and the row here is another client's.
	unknownName := x.Vouched && x.Res.InRecovery && x.Res.ReceiverHidden && !streams(x) && statesHidden(rows) &&
		!listedByOther(x, ip, nodes)
	var found checker.Replica
	count := 0
	for _, r := range rows {
		// A row under a name of its own (pg_receivewal, barman, another
		// server on the host) is another client's, not x's.
		// While x's own check, with the same rights, found no walreceiver
		// (see couldBeRow), only a row by x's own name may be its (a
		// walreceiver reconnecting): one under the default name
		// ("walreceiver", or none) is another client's on the host.
		generic := r.ApplicationName == "" || r.ApplicationName == "walreceiver"
		if r.ClientAddr == ip && (couldBeRow(x, r) || !generic && r.ApplicationName == name) &&
			(unknownName || generic || r.ApplicationName == name || r.ApplicationName == x.Res.Name) {
			found = r
			count++
		}
	}
	if count != 1 {
		return checker.Replica{}, matchNone
	}
	// Another node on the same address would make the match a guess.
	for _, other := range nodes {
		if x.Vouched && !other.Vouched && !other.live() && x.live() && x.Res.ReceiveTimeline != 0 &&
			(found.ApplicationName == "" || found.ApplicationName == "walreceiver" || found.ApplicationName == name) {
			// A member nothing vouches for that does not even answer, beside
			// a replica whose walreceiver streams, and a row that names
			// nobody else: the row is the replica's.
			continue
		}
		if other != x && other.AliasOf != x && x.AliasOf != other &&
			(other.RemoteIP == ip || other.Host == x.Host) {
			return checker.Replica{}, matchNone
		}
	}
	return found, matchOne
}

// fromOtherNode reports whether walsender row r comes from the address of
// another replica of the set, up or down, that is not x's too and may go
// by the row's name: it is that replica's (a namesake the checks cannot
// reach may stream still), not x's. (Not a master's address: a replica on
// the master's machine may connect from it.) A replica of another cluster
// streams from none of ours, and one whose walreceiver streams under
// another name is not the row's. For an x something vouches for, a
// replica nothing vouches for only may own the row (unvouched): a server
// listed at the address x streams from does not take x's row away by
// claiming it.
func fromOtherNode(x *Node, r checker.Replica, nodes []*Node) (other, unvouched bool) {
	a := r.ClientAddr
	if ownAddr(x, a) {
		return false, false
	}
	for _, y := range nodes {
		if y == x || y.AliasOf == x || x.AliasOf == y || !y.Res.InRecovery || y.RemoteIP != a && y.Host != a ||
			otherSystem(&y.Res, &x.Res) ||
			!y.Res.ReceiverHidden && y.rowName() != r.ApplicationName && y.Res.Name != r.ApplicationName {
			continue
		}
		if y.Vouched || !x.Vouched {
			return true, false
		}
		other, unvouched = true, true
	}
	return other, unvouched
}

// doubtfulRow returns the client address of a row of rows by x's name
// that may be a member's nothing vouches for (see fromOtherNode), "" when
// none is.
func doubtfulRow(x *Node, rows []checker.Replica, nodes []*Node) string {
	for _, r := range rows {
		if r.ApplicationName == x.rowName() && couldBeRow(x, r) {
			if _, unvouched := fromOtherNode(x, r, nodes); unvouched {
				return r.ClientAddr
			}
		}
	}
	return ""
}

// ownAddr reports whether a walsender row's client address a is x's own
// (one not shown counts as its: nothing says it is another's).
func ownAddr(x *Node, a string) bool {
	return a == "" || x.atAddr(a)
}

// upstreamsRow reports whether walsender row r may be that of the server
// x's walreceiver streams from, outside the set: r comes from the address
// x streams from, which is neither x's nor the address of a node of the
// set x streams from (a replica
// cascading from a standby the set does not list, all of them going by
// one cluster_name; or x on the machine of a master it reaches at an
// address the set does not list, where its row comes from that address
// too). Its sync state and positions may be that standby's.
func upstreamsRow(x *Node, r checker.Replica, nodes []*Node) bool {
	h := x.Res.UpstreamHost
	if h == "" || r.ClientAddr != h || h == x.RemoteIP || h == x.Host {
		return false
	}
	shared := false
	for _, y := range nodes {
		// The server x streams from is in the set (an address of it):
		// its row is found by its own rules. Another server on that
		// machine (another port) is not the one x streams from.
		if streamsFrom(x, y) {
			return false
		}
		// Only a name other servers go by too (a cluster_name left at
		// its default) can be the upstream's: a replica's own name on
		// a row from the address it streams from is its own (a
		// replica on the master's machine that reaches it at an
		// address the set does not list).
		// (A namesake nothing vouches for changes nothing of a node
		// something vouches for.)
		shared = shared || y != x && y.AliasOf != x && x.AliasOf != y && y.rowName() == x.rowName() && (y.Vouched || !x.Vouched)
	}
	return shared
}

// upstreamsOnlyRow reports whether the one row of rows by x's name may be
// its upstream's (see upstreamsRow).
func upstreamsOnlyRow(x *Node, rows []checker.Replica, nodes []*Node) bool {
	var found checker.Replica
	count := 0
	for _, r := range rows {
		if r.ApplicationName == x.rowName() && couldBeRow(x, r) {
			found = r
			count++
		}
	}
	return count == 1 && upstreamsRow(x, found, nodes)
}

// listedByOther reports whether a live, vouched node of nodes other than x
// shows a walsender row by x's name from ip (what a server nothing vouches
// for lists proves nothing: a rogue could list any replica to take its
// rows away).
func listedByOther(x *Node, ip string, nodes []*Node) bool {
	for _, y := range nodes {
		if y == x || !y.live() || !y.Vouched {
			continue
		}
		for _, r := range y.Res.Replicas {
			if r.ClientAddr == ip && r.ApplicationName != "" && (r.ApplicationName == x.Name() || r.ApplicationName == x.Res.Name) {
				return true
			}
		}
	}
	return false
}

// clientIP is the address x's walsender rows show as their client: the
// address its checks reached, else its host when that is an IP ("" when
// neither is known).
func (x *Node) clientIP() string {
	if x.RemoteIP != "" {
		return x.RemoteIP
	}
	if a := net.ParseIP(x.Host); a != nil {
		return a.String()
	}
	return ""
}

// atAddr reports whether a, a walsender row's client address, is x's:
// the address x's check connection reached, or x's host as written or as
// an IP in its canonical form. An empty address (hidden from the check
// user) is nobody's.
func (x *Node) atAddr(a string) bool {
	if a == "" {
		return false
	}
	if a == x.RemoteIP || a == x.Host {
		return true
	}
	ip := net.ParseIP(x.Host)
	return ip != nil && a == ip.String()
}

// otherSystem reports whether a and b show two system identifiers: of two
// clusters. One not shown (0) differs from none.
func otherSystem(a, b *checker.Result) bool {
	return a.SystemID != 0 && b.SystemID != 0 && a.SystemID != b.SystemID
}

func uitoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

// maxAheadPerNode bounds the records a replica keeps of one node's servers
// it holds WAL past (see aheadReplica).
const maxAheadPerNode = 8

// oldestAhead returns where node id's oldest record in ahead is (-1 when
// none is) and how many records of it ahead holds.
func oldestAhead(ahead []behind, id ID) (oldest, k int) {
	oldest = -1
	for i, a := range ahead {
		if a.id == id {
			if k == 0 {
				oldest = i
			}
			k++
		}
	}
	return oldest, k
}
