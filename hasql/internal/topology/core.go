package topology

import (
	"log/slog"
	"slices"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// ID names a node for its whole life in the set; IDs are never reused.
type ID int

// None is no node.
const None ID = -1

// Role is what a node is for routing. The values are those of hasql.Role.
type Role int

// The roles (see hasql.Role for their meaning).
const (
	RoleUnknown Role = iota
	RoleMaster
	RoleSyncReplica
	RoleAsyncReplica
	RoleQuorumReplica
	RoleReplica
	RoleDetached
	RoleStaleMaster
)

// IsReplica reports a role that serves reads as a replica.
func (r Role) IsReplica() bool {
	return r == RoleSyncReplica || r == RoleAsyncReplica || r == RoleQuorumReplica || r == RoleReplica
}

func (r Role) String() string {
	switch r {
	case RoleMaster:
		return "master"
	case RoleSyncReplica:
		return "sync"
	case RoleAsyncReplica:
		return "async"
	case RoleQuorumReplica:
		return "quorum"
	case RoleReplica:
		return "replica"
	case RoleDetached:
		return "detached"
	case RoleStaleMaster:
		return "stale"
	}
	return "unknown"
}

// Member is a node of the set as its source gives it.
type Member struct {
	ID   ID
	Addr string // "host:port"
	Host string
	// Name is the name to find the node by among a master's walsenders
	// (WithReplicaName, or Patroni's member name); "" takes the one its
	// checks report.
	Name string
	// Trusted: the user named this node (a host of the connection string,
	// or an address of a DNS name they gave). A node that is not is
	// believed only once a master's walsender lists it (see vouched).
	Trusted bool
}

// Config is what the core is told once.
type Config struct {
	// SystemID pins the cluster's system identifier: a node of any other
	// is foreign. 0 learns it from the first confirmed master.
	SystemID uint64
	// Flap damping: a node that came back up FlapCount times within
	// FlapWindow is damped for FlapCooldown: it serves no plain reads (it
	// stays eligible as master, which routing safety decides). FlapCount 0
	// turns damping off.
	FlapCount    int
	FlapWindow   time.Duration
	FlapCooldown time.Duration
	// Record, if set, is given every event with the decisions after it
	// (see Entry and Replay).
	Record func(Entry)
}

// Core is the decision state machine. It is not safe for concurrent use:
// the shell serializes the events (the Manager holds its mutex).
type Core struct {
	cfg   Config
	nodes []*Node // the set, in its source's order

	cluster       uint64 // system identifier: pinned, or of the first confirmed master
	history       lsnHistory
	splitBrain    string // the split brain last reported
	staleReported string
	everHadMaster bool
	ignoreAhead   uint32 // after ForgetTimeline, see aheadReplica
	// keptTL is the newest timeline of a master the core elected in the
	// cluster while anchored, or that a node the user named showed before
	// it left the set: kept when that node leaves (a discoverer dropped
	// the new master's record, or a replica's, for a while), so that a
	// server left writable on an older timeline stays stale. Only
	// ForgetTimeline, which also forgets the cluster unless pinned, clears
	// it.
	keptTL       uint32
	anchorLogged bool
	anchor       bool // a trusted node was in the set once
	built        builtFrom
	follows      []*Node // scratch
	contenders   []*Node // writable nodes of the cluster that may be master, stale ones included
	elected      Election
	ready        Ready
	fast         bool
	// replicasChanged is when a check last showed something that may
	// change a master's walsenders (see WantReplicas).
	replicasChanged time.Time
}

// New returns a Core with an empty set.
func New(cfg Config) *Core {
	c := &Core{cfg: cfg, cluster: cfg.SystemID}
	if cfg.Record != nil {
		cfg.Record(Entry{Kind: "config", SystemID: cfg.SystemID, FlapCount: cfg.FlapCount, FlapWindow: cfg.FlapWindow,
			FlapCooldown: cfg.FlapCooldown, Decision: Decision{Master: None}})
	}
	return c
}

// Node is the core's view of one node. The shell reads it (holding the
// lock it serializes events with) and never changes it.
type Node struct {
	Member

	// What the checks found.
	Checked   bool // a check has finished
	Up        bool
	Suspect   bool // a check timed out; one more puts it down
	Timeouts  int
	Res       checker.Result
	ResAt     time.Time
	Latency   time.Duration
	EWMA      time.Duration
	LastErr   error
	LastErrAt time.Time
	RemoteIP  string
	Partial   bool // Res comes from a promotion probe, not a full check

	// Derived.
	Role        Role
	SyncState   string
	Writable    bool
	SplitBrain  bool
	Stale       bool
	StaleBehind string // the replica that proves a stale node behind; "" for an older timeline
	Detached    string // why a replica does not follow the master
	// Waiting says why a writable node that may be elected is not master
	// yet: the core waits for a check that decides (see elect); "" when
	// it does not wait for one.
	Waiting     string
	SyncUnknown string // why its sync state is unknown
	AliasOf     *Node  // the node that reaches the same server
	LagBytes    int64
	Lag         time.Duration
	LagKnown    bool
	LagAt       time.Time
	Vouched     bool // the node's claims count (see vouched)
	// Damped: the node flapped (see Config.FlapCount) and serves no plain
	// reads until DampedUntil.
	Damped      bool
	DampedUntil time.Time
	ups         []time.Time // when it last came back up, at most FlapCount

	derived        Role // the role derived for the node itself (an alias reports its representative's)
	settled        bool // a role was derived with the master known
	loggedDetached string
	okChecks       int // checks of its own that succeeded
	detachedAt     int // okChecks when it was first found detached; 0 when it is not
	loggedSync     string
	severPending   bool   // lost master: cut in-flight work once another is master
	seenTL         uint32 // the newest timeline it proved while in the set
	// proofs are the history files it showed with no walreceiver, one per
	// server that showed one (at most maxProofs), each until shown left
	// over (see histLeftOver) or moved with its server (moveHistory).
	proofs []histProof
	// pre is what it showed while the cluster's system identifier was
	// not learned, one record per system identifier of the servers that
	// answered at it (at most maxPre); the record of the cluster's is
	// taken into seenTL and proofs once the cluster is learned.
	pre []preRecord
	// ahead lists the writable nodes its WAL was found ahead of, with
	// the timeline each was on then (see elect): each stays stale while it
	// is on that timeline, until this server restarts (a rewind and a fresh
	// copy both do, and either takes that WAL away) or leaves the set.
	ahead []behind
	// parked is the ahead of the server that answered here before
	// another one did (a name that reaches another replica for a while):
	// it is the server's again when that server answers here again.
	parked       []behind
	parkedServer checker.ServerID

	// The WAL position at the last two checks; when the last began.
	pos, prevPos walPos
	CheckBegan   time.Time
	// followedBy is the master x was last found following, and
	// followedAt that master's last good check then (its ResAt); unlisted
	// whether x is detached because no walsender lists it (see
	// lostWithMaster).
	followedBy ID
	followedAt time.Time
	unlisted   bool
	// replicasBegan is when the check that read Res.Replicas began: the
	// last check, or an earlier one when the last reused its list
	// (checker.Result.ReplicasCached).
	replicasBegan time.Time
	// serverSince is when the first check that reached the server now
	// behind the node began: its WAL position only grows since (a rewind
	// needs a restart).
	serverSince time.Time
	// writableSince is when the first check that found the server now
	// behind the node writable began (zero while it is not): its first
	// writable check is the one aheadUnordered holds back. Not serverSince:
	// an answer with the server's identity in recovery (a replica
	// promoted since, or a copy of the server's identity a rogue showed
	// here before the name reached the server) tells nothing of its WAL
	// as a writable server.
	writableSince time.Time
	// electedWritable: the node was elected since writableSince. Its
	// first writable check served an election once; what later checks of
	// replicas show past it is compared at its next check (aheadReplica),
	// also after it lost the role for a while (a split brain): not an
	// unordered position that keeps it from election (aheadUnordered),
	// which would break the tie the moment its role was derived again.
	electedWritable bool
	// writableAt: the remote addresses at which checks found the server
	// now behind the node writable since writableSince (the latest
	// maxWritableAt). A check that reaches another one starts the first
	// writable check's count again.
	writableAt []string
	// replaced: the server now behind the node replaced another one the
	// checks saw (a restart, a new server at the address): a walsender row
	// read before serverSince is the old one's.
	replaced bool
	// backSince is when the check that found the node up again began,
	// after it was down or another server answered at its address (zero
	// before either): walsender rows read before it speak of the run
	// before, not of whether the master waits for this one.
	backSince time.Time
	// streamSince is when the check began that found the same server's
	// walreceiver stopped, or streaming from another upstream (zero
	// before): a master's walsender row of it read before is of the
	// walsender that served it then, gone since.
	streamSince time.Time
	// syncTL is the timeline of the master that gave SyncState, and
	// syncRead when the read of its walsenders that gave it began: a
	// SyncState read before backSince is of the run before.
	syncTL   uint32
	syncRead time.Time
	// namedSince is when the member was last given another name (zero
	// before): a walsender row read before it was found by the old name,
	// and says nothing of whether the master waits for the node, nor how
	// far it replayed.
	namedSince time.Time
	// readAt is when the last check read the node's positions, as late as
	// it can have been: its answer, less the way back (half the shortest
	// check of the server: a check that opened a connection, or retried,
	// read near its end); the answer itself at the server's first check,
	// whose way back is not known yet.
	readAt time.Time
	// minLatency is the shortest check of the server now at the address
	// (0 before its first).
	minLatency time.Duration
	// unconfirmed: a writable node that stands for another writable node
	// which has not been checked since it changed server (an alias carried
	// over a restart, see dedup): it is not elected until that one is
	// checked again, for the change may be another server's, not a restart.
	// It holds that node's address; "" when the node stands for none.
	unconfirmed string
}

// behind is a writable node a replica was found ahead of, on timeline tl,
// and the server it was then: the proof holds against that node (a
// restart keeps it), and against that server at whatever address it is
// reached (an alias, or the node discovery dropped and reported again).
type behind struct {
	id     ID
	tl     uint32
	server checker.ServerID
}

// Name is how the node is known in its master's pg_stat_replication.
func (x *Node) Name() string {
	if x.Member.Name != "" {
		return x.Member.Name
	}
	return x.Res.Name
}

// walPos is a node's WAL position at a check.
type walPos struct {
	lsn      checker.LSN // what it has: written, or received
	replayed checker.LSN // a replica's replayed (whole records); a master's written
	tl       uint32      // the timeline it had then (see bestTimeline)
	at       time.Time   // when the check ended
}

// Ready is what the shell must do after an event, in this order: cut the
// connections in flight on Cut, reset the pools of Reset, then publish the
// view (a snapshot naming a new master comes after the cut of the old one),
// then log, count, check the others and refresh discovery.
type Ready struct {
	Cut   []ID
	Reset []ID
	// Derived lists the nodes whose view was derived again; nil with
	// All: every node's.
	Derived []ID
	All     bool
	// CheckOthers: fast checks began; check every other node now.
	CheckOthers bool
	// Refresh: a node went down; ask the discoverer to look again.
	Refresh bool
	// Fast: checks must run fast (no master, or it is suspect).
	Fast        bool
	Logs        []Log
	RoleChanges []RoleChange
	// SplitBrain is whether a split brain is on, SplitBrainChanged
	// whether that changed.
	SplitBrain, SplitBrainChanged bool
}

// Log is a line for the shell's logger.
type Log struct {
	Level slog.Level
	Msg   string
	Attrs []any
}

// RoleChange is a node's role change, for telemetry.
type RoleChange struct {
	ID       ID
	From, To Role
	Failover bool // a node became master after another was
}

// Election is who may take writes, and why not when nobody may.
type Election struct {
	Master *Node // nil: none
	// SplitBrain lists the writable nodes that tie (writes refused).
	SplitBrain []string
	// Stale lists the writable nodes on an older timeline (no master but
	// these).
	Stale []string
	// StaleBehind is, for each of Stale, the address of the replica that
	// holds WAL of its timeline it never wrote (another branch of that
	// timeline, or WAL a newer one's dead master sent); "" for a node on
	// an older timeline than Timeline.
	StaleBehind []string
	// StaleMoved is, for each of Stale, whether the replica of StaleBehind
	// answered at an address that reaches the stale node itself now (a
	// name moved onto it since): there is nothing to promote there.
	StaleMoved []bool
	// Timeline is the cluster's newest timeline; with stale masters and
	// the cluster not learned yet, the newest a vouched node of their
	// system identifier showed, which they are older than.
	Timeline uint32
}

// TakeReady returns the actions accumulated since the last call.
func (c *Core) TakeReady() Ready {
	r := c.ready
	c.ready = Ready{}
	return r
}

// Nodes returns the set in order (read-only).
func (c *Core) Nodes() []*Node { return c.nodes }

// Node returns the node of id, nil when it is not in the set.
func (c *Core) Node(id ID) *Node {
	for _, x := range c.nodes {
		if x.ID == id {
			return x
		}
	}
	return nil
}

// Elected is the last election's outcome.
func (c *Core) Elected() Election { return c.elected }

// Cluster is the cluster's system identifier, 0 while unknown.
func (c *Core) Cluster() uint64 { return c.cluster }

// Timeline is the newest timeline the cluster's vouched nodes in the set
// have shown, or that keptTL holds (of an elected master, or shown by a
// node the user named, that left the set since).
func (c *Core) Timeline() uint32 {
	tl := c.keptTL
	for _, x := range c.nodes {
		tl = max(tl, x.seenTL, x.histTL())
	}
	return tl
}

func (c *Core) log(level slog.Level, msg string, attrs ...any) {
	c.ready.Logs = append(c.ready.Logs, Log{Level: level, Msg: msg, Attrs: attrs})
}

func (c *Core) cut(x *Node) {
	if !slices.Contains(c.ready.Cut, x.ID) {
		c.ready.Cut = append(c.ready.Cut, x.ID)
	}
}

func (c *Core) reset(x *Node) {
	if !slices.Contains(c.ready.Reset, x.ID) {
		c.ready.Reset = append(c.ready.Reset, x.ID)
	}
}

// SetMembers makes members the node set: new IDs join (unchecked, role
// unknown), IDs missing leave. A node that leaves while it may have taken
// writes (master, writable at its last check, or a lost master whose
// in-flight work was not cut yet) has its connections cut at once: nothing
// routes to it any more, and a commit landing there after another node is
// promoted would be lost. What a node that left proved (its timeline) is
// forgotten with it. An ID that stays under another description keeps its
// checks and connections (nothing is cut for it) and earns being vouched
// for again; under another name, no walsender row read before makes it
// sync nor says how far it replayed.
func (c *Core) SetMembers(now time.Time, members []Member) {
	if len(members) == 0 && len(c.nodes) > 0 {
		// The set is never emptied: a source that reports nothing usable
		// keeps the last good set.
		c.log(slog.LevelWarn, "pgxha: an empty node set was ignored; the last good set stays")
		c.record(Entry{Kind: "members", At: now, Members: members}, false)
		return
	}
	old := make(map[ID]*Node, len(c.nodes))
	for _, x := range c.nodes {
		old[x.ID] = x
	}
	c.handOverProofs(members)
	next := make([]*Node, 0, len(members))
	for _, mb := range members {
		if x := old[mb.ID]; x != nil {
			if x.Member != mb {
				if x.Member.Name != mb.Name {
					// Walsender rows read so far were matched by the old
					// name: what they said (sync, a replay position) is
					// another walsender's under the new one. The
					// master's next check reads them again (see
					// WantReplicas: replicasChanged).
					x.namedSince, x.SyncState = now, ""
				}
				x.Member = mb
				// Re-earned under its new description; a member the
				// user named is vouched for whatever its name (as it
				// stays before the rebuild: dedup orders by it, and the
				// master's address would yield to another of its server).
				x.Vouched = mb.Trusted
			}
			next = append(next, x)
			delete(old, mb.ID)
			continue
		}
		next = append(next, &Node{Member: mb, Role: RoleUnknown})
	}
	for _, x := range c.nodes {
		if _, gone := old[x.ID]; !gone {
			continue
		}
		if x.Trusted && c.anchored() {
			// The newest timeline a node the user named showed stays: a
			// replica that streamed a newer timeline proved it exists,
			// whether or not its source is checked (see keptTL). What
			// an untrusted node showed goes with it.
			c.keptTL = max(c.keptTL, x.seenTL)
		}
		if x.Role == RoleMaster || x.Role == RoleStaleMaster || x.Writable || x.severPending {
			c.cut(x)
			c.log(slog.LevelWarn, "pgxha: node that may have taken writes left the set: its connections are cut",
				"addr", x.Addr, "name", x.Name(), "role", x.Role.String())
		}
	}
	c.nodes = next
	c.replicasChanged = now
	c.rebuild(now, nil)
	c.record(Entry{Kind: "members", At: now, Members: slices.Clone(members)}, false)
}

// handOverProofs gives the history-file proofs of the nodes that leave
// the set for members to another node that stays, where the server that
// showed the file answers (another address of it), as vouched before the
// set changes.
func (c *Core) handOverProofs(members []Member) {
	stays := make(map[ID]bool, len(members))
	for _, mb := range members {
		stays[mb.ID] = true
	}
	for _, x := range c.nodes {
		if stays[x.ID] {
			continue
		}
		for _, p := range x.proofs {
			if y := c.answering(p.server, func(y *Node) bool { return stays[y.ID] }); y != nil {
				y.addProof(p)
			}
		}
		x.proofs = nil
	}
}

// ReplicasMaxAge is how old a writable node's walsenders may be when the
// check after the one that uses them begins: a check whose next one would
// find them older reads them (see WantReplicas). With a check interval of
// 500 ms, every fourth check reads them when nothing else says they may
// have changed; with an interval over about a second, every check does.
const ReplicasMaxAge = 2 * time.Second

// maxWritableAt bounds Node.writableAt: the addresses of one host a check
// may reach in turn.
const maxWritableAt = 8

// WantReplicas reports whether id's check beginning at now must read its
// walsenders (checker.ReadAll): it is writable, and by its next check
// (next from now at the latest, the check interval) they would be more than
// ReplicasMaxAge old (give or take an eighth of next, for the moments
// checks begin at), or since the check that read them began, a
// check of some node showed what may change them (a node that came up,
// went down, joined or left the set, restarted, or changed upstream,
// timeline, name or kind), or another node of the set that may be a
// replica of it (not writable, not of another cluster, not the master or
// an address of it) does not follow it: down, or up and not listed (yet:
// a replica that comes back shows up a moment before the master lists it,
// and is to serve reads as soon as it does).
func (c *Core) WantReplicas(id ID, now time.Time, next time.Duration) bool {
	x := c.Node(id)
	if x == nil || !x.Checked || x.Res.InRecovery {
		return false
	}
	if x.replicasBegan.IsZero() || !c.replicasChanged.Before(x.replicasBegan) ||
		now.Sub(x.replicasBegan)+next > ReplicasMaxAge+next/8 {
		return true
	}
	for _, y := range c.nodes {
		if y == x || y.AliasOf != nil || x.AliasOf == y || y == c.elected.Master || y.mayWrite() || c.foreign(y) != "" {
			continue // never listed by x's walsenders
		}
		if !y.live() || !containsNode(c.follows, y) {
			return true
		}
	}
	return false
}

// WantNames reports whether id's check, asked to read its walsenders (see
// WantReplicas), must also name them afresh (checker.ReadNames): it is
// writable and, since they were last read, a check of some node showed
// what may change them. A walsender's pid that another walsender took
// between two reads is then named after the one it serves now (the
// checker names a pid once, and forgets it when a read no longer lists
// it). Not for every read: naming costs the server a read of every
// backend's status, and a node of the set that is down has the walsenders
// read at every check.
func (c *Core) WantNames(id ID) bool {
	x := c.Node(id)
	if x == nil || !x.Checked || x.Res.InRecovery || x.replicasBegan.IsZero() {
		return false
	}
	return !c.replicasChanged.Before(x.replicasBegan)
}

// walsendersMayChange reports whether a node's check, from before to res,
// shows what may change its upstream's walsenders.
func walsendersMayChange(before, res *checker.Result) bool {
	return before.InRecovery != res.InRecovery || before.Server() != res.Server() ||
		before.UpstreamHost != res.UpstreamHost || before.UpstreamPort != res.UpstreamPort ||
		before.ReceiveTimeline != res.ReceiveTimeline || before.Name != res.Name ||
		before.ReceiverHidden != res.ReceiverHidden
}

// CheckOK records a check of id that succeeded: it began at began and its
// answer came at ended, from remoteIP.
func (c *Core) CheckOK(id ID, res checker.Result, began, ended time.Time, remoteIP string) {
	x := c.Node(id)
	if x == nil {
		return
	}
	found := res
	res.LSN = replayedContent(&res)
	wasChecked, wasUp := x.Checked, x.Up
	before := routedAs(x)
	latency := ended.Sub(began)
	if wasChecked && !wasUp {
		x.back(began)
	}
	if old := x.Res.Server(); old != res.Server() {
		// What a master said of the server before is not said of this
		// one; nor of the server before at its other addresses when this
		// may be it restarted: a restart keeps the system identifier and
		// the name, but for a name read with no walreceiver running
		// (cluster_name, not the walreceiver's application_name); a name
		// that moved to a streaming server of another name is not it. A
		// restart another address recorded already is not counted again.
		x.SyncState, x.minLatency = "", 0
		c.sighted(x, &res)
		if seen := c.restartRecorded(x, &res); !seen {
			if wasChecked {
				x.back(began)
			}
			if old != (checker.ServerID{}) && old.SystemID == res.SystemID && (sameName(x.Res.Name, res.Name) ||
				x.Res.ReceiveTimeline == 0 || res.ReceiveTimeline == 0) {
				c.serverLeft(x, began)
			}
		}
	}
	if wasChecked && wasUp && res.InRecovery && x.Res.InRecovery && x.Res.Server() == res.Server() &&
		(x.Res.UpstreamHost != res.UpstreamHost || x.Res.UpstreamPort != res.UpstreamPort ||
			x.Res.ReceiveTimeline != 0 && res.ReceiveTimeline == 0) {
		// The same server's walreceiver stopped, or streams from another
		// upstream (primary_conninfo reloaded, a cascade): the
		// walsender a master's row of it was read from has gone, and the
		// master may have named another standby synchronous since and
		// acknowledged commits it lacks. Known at the master's next read.
		// (What the last master said stays for when no master is known:
		// a walreceiver stops when its master does.)
		x.streamSince = began
	}
	if x.Res.Server() != res.Server() || x.serverSince.IsZero() {
		switch now := res.Server(); {
		case now != (checker.ServerID{}) && now == x.parkedServer:
			x.ahead, x.parked, x.parkedServer = x.parked, nil, checker.ServerID{}
		case len(x.ahead) > 0 && x.Res.Server() != (checker.ServerID{}):
			x.parked, x.parkedServer, x.ahead = x.ahead, x.Res.Server(), nil
		default:
			x.ahead = nil
		}
		x.serverSince = began
		x.replaced = x.Res.Server() != (checker.ServerID{})
		// The master found the server before following it, not this one
		// (see lostWithMaster).
		x.followedAt = time.Time{}
		if x.Checked {
			// Another server, or a restart: trust is earned again.
			x.Vouched = x.Trusted
		}
	}
	if prev, now := x.Res.Server(), res.Server(); prev != (checker.ServerID{}) && now != prev &&
		(x.Role == RoleMaster || x.Writable || x.severPending) {
		// Another server answers at this address now (a name or a
		// virtual address moved, the server restarted): connections
		// opened to the one that may have taken writes must not go on,
		// also when the checks had lost it (a hung master whose name
		// moved: its connections wake up with it).
		c.cut(x)
		c.reset(x)
		c.log(slog.LevelWarn, "pgxha: another server answers at the address of a node that may have taken writes: its connections are cut",
			"addr", x.Addr, "name", x.Name())
	}
	x.Checked, x.Latency, x.RemoteIP = true, latency, remoteIP
	var wayBack time.Duration
	if x.minLatency > 0 {
		wayBack = min(latency, x.minLatency) / 2
	}
	x.readAt = ended.Add(-wayBack)
	if x.minLatency == 0 || latency < x.minLatency {
		x.minLatency = latency
	}
	x.okChecks++
	x.Up, x.Suspect, x.Timeouts = true, false, 0
	x.prevPos = x.pos
	if x.Res.Server() != res.Server() {
		// Another server, or this one restarted (rewound, copied
		// afresh): what it had before proves nothing of what it has.
		x.prevPos = walPos{}
	}
	x.pos = walPos{lsn: max(res.LSN, res.ReceiveLSN), replayed: res.LSN, tl: bestTimeline(&res), at: ended}
	x.CheckBegan = began
	newAddr := remoteIP != "" && !slices.Contains(x.writableAt, remoteIP)
	switch {
	case res.InRecovery || res.ReadOnly:
		x.writableSince, x.electedWritable = time.Time{}, false
		x.writableAt, newAddr = x.writableAt[:0], false
	case x.Res.Server() != res.Server():
		x.writableSince, x.electedWritable = began, false
		x.writableAt, newAddr = x.writableAt[:0], remoteIP != ""
	case newAddr && len(x.writableAt) > 0:
		// The check reached a machine that never answered writable with
		// this identity here (a name that moved): what did before was
		// another server, whatever it showed (a rogue may copy the
		// master's identity at an address whose name then moves onto the
		// master). Counted once per address: the addresses of one host
		// (dual-stack, a pooler's instances) are seen in turn. An
		// election since the count began stays (a split brain's tie is
		// not broken by the address a check reached).
		x.writableSince = began
	case x.writableSince.IsZero():
		// Elected already when its promotion was seen (PromotionSeen), as
		// this server.
		x.writableSince, x.electedWritable = began, x.derived == RoleMaster
	}
	if newAddr {
		if len(x.writableAt) == maxWritableAt {
			x.writableAt = append(x.writableAt[:0], x.writableAt[1:]...)
		}
		x.writableAt = append(x.writableAt, remoteIP)
	}
	if !wasChecked || !wasUp || walsendersMayChange(&x.Res, &res) {
		c.replicasChanged = ended
	}
	if !res.ReplicasCached {
		x.replicasBegan = began
	}
	x.Res, x.ResAt = res, ended
	x.LastErr, x.LastErrAt = nil, time.Time{}
	if x.EWMA == 0 {
		x.EWMA = latency
	} else {
		x.EWMA = (x.EWMA*7 + latency) / 8
	}
	if wasChecked && !wasUp {
		c.log(slog.LevelInfo, "pgxha: node up", "addr", x.Addr, "name", x.Name(), "recovery", res.InRecovery)
		c.flapped(x, ended)
	}
	x.Partial = false
	var only *Node
	if wasChecked && !x.mayWrite() && routedAs(x) == before && len(x.Res.Replicas) == 0 {
		// What the others' roles depend on did not change (and no replica
		// cascades from it): derive x's alone.
		only = x
	}
	// The master's positions, for replicas' lag: the elected master's
	// only, so that a stale master does not reset the record. Recorded
	// before the roles are derived when x is master already, so that the
	// replicas' lag is measured against the position this check read, not
	// the one before (a replica whose replay stands still would be taken
	// for one within a check of the master for a check longer).
	writes := !res.InRecovery && !res.ReadOnly
	wasMaster := c.elected.Master == x
	if wasMaster && writes {
		c.history.add(x.ID, res.Timeline, began.Add(latency/2), res.LSN)
	}
	c.rebuild(ended, only)
	if m := c.elected.Master; m == x && writes && !wasMaster {
		c.history.add(x.ID, res.Timeline, began.Add(latency/2), res.LSN)
	}
	c.record(Entry{Kind: "ok", At: ended, Began: began, ID: id, Result: &found, RemoteIP: remoteIP}, false)
}

// walSegmentAlign is the smallest WAL segment size PostgreSQL allows
// (initdb --wal-segsize, 1 MiB to 1 GiB, a power of 2): every segment
// boundary is a multiple of it.
const walSegmentAlign = 1 << 20

// replayedContent is how far a replica's replay reaches into WAL the
// master wrote. A replica that replayed a WAL switch record (pg_switch_wal,
// the end of a base backup, archive_timeout) reports the end of the
// segment as its replay position (the reader takes the record to extend
// to it), while the master may still be writing the segment's padding:
// for milliseconds its write position is below that end, megabytes below
// it, and a replica read before the master is past it (PostgreSQL 15 under
// writes and repeated base backups: 10 of 352,244 ordered samples). What
// the replica holds of the master's WAL ends where it received it: a
// replay position on a segment boundary beyond the received one counts
// as the received one, within a segment of the default size (16 MiB) of
// it. A replica that does not stream replays what it has from its own WAL
// or an archive, long after the master that wrote it finished the segment
// (archived segments end with switch records under archive_timeout), and
// the received position it reports is where streaming stopped: no
// received position, or one more than a segment behind, keep the replay
// position. With the server's segment size known (checker.Result.
// WalSegmentSize), only the end of the segment the received position is
// in counts so; unknown, a boundary of the smallest segment within the
// default size. Not a history file shown with no walreceiver: every
// replica that once followed a promotion holds one, and one whose
// walreceiver timed out while the master stalled in a switch's padding
// made a proof against that master that nothing ends (a limit: an archive
// replay that ends at the end of the segment where streaming stopped is
// taken for padding too).
func replayedContent(r *checker.Result) checker.LSN {
	if !r.InRecovery || r.ReceiveLSN == 0 || r.LSN <= r.ReceiveLSN {
		return r.LSN
	}
	if seg := checker.LSN(r.WalSegmentSize); seg > 0 && seg&(seg-1) == 0 {
		// The server's segment size known: only the end of the segment
		// the received position is in.
		// A received position on a boundary is in the segment that ends
		// there: a switch record in the next one was not received.
		if r.LSN%seg == 0 && r.LSN-seg < r.ReceiveLSN {
			return r.ReceiveLSN
		}
		return r.LSN
	}
	if r.LSN-r.ReceiveLSN < walSegmentDefault && r.LSN%walSegmentAlign == 0 {
		return r.ReceiveLSN
	}
	return r.LSN
}

// walSegmentDefault is PostgreSQL's default WAL segment size.
const walSegmentDefault = 16 << 20

// CheckFailed records a check of id that failed at at with err; timeout
// tells a check that ran out of time from one refused or failed. It
// returns true when the node must be checked again at once (a first
// timeout needs a confirmation).
func (c *Core) CheckFailed(id ID, err error, timeout bool, at time.Time) (again bool) {
	x := c.Node(id)
	if x == nil {
		return false
	}
	wasChecked := x.Checked
	x.Checked = true
	x.LastErr, x.LastErrAt, x.ResAt = err, at, at
	if timeout && x.Up {
		x.Timeouts++
	}
	switch {
	case timeout && x.Up && x.Timeouts < 2:
		if !x.Suspect {
			c.log(slog.LevelWarn, "pgxha: node suspect: check timed out", "addr", x.Addr, "name", x.Name(), "role", x.Role.String(), "err", err)
		}
		x.Suspect = true
		again = true
	default:
		if x.Up || !wasChecked {
			c.log(slog.LevelWarn, "pgxha: node down", "addr", x.Addr, "name", x.Name(), "role", x.Role.String(), "err", err)
		}
		if x.Up {
			c.reset(x)
			c.ready.Refresh = true
			c.replicasChanged = at
			// A hung or cut-off replica's reads can go elsewhere: cut
			// them now. The master's are cut once another node is master
			// (see rebuild): nothing else can take them.
			if timeout && x.Role != RoleMaster {
				c.cut(x)
			}
			// Whether the master waits for it was said while it was up:
			// a master may name another standby synchronous and
			// acknowledge commits it never receives while it is down,
			// and be out of sight when it comes back. Its other
			// addresses reach the same server.
			c.serverLeft(x, at)
		}
		x.Up, x.Suspect, x.Timeouts = false, false, 0
	}
	x.Partial = false
	c.rebuild(at, nil)
	c.record(Entry{Kind: "failed", At: at, ID: id, Err: errText(err), Timeout: timeout}, again)
	return again
}

// serverLeft records that the server x last reached went down, or
// restarted, at at: x, and the addresses the last rebuild took for the
// same server as x's or that show its identity under its name, when x is
// vouched for (what a node nothing vouches for shows changes nothing of
// the others), forget the sync state the last master gave them and take
// walsender rows read before at for the run before. Not every node of the
// same identity: two servers may show one under two names (see dedup).
func (c *Core) serverLeft(x *Node, at time.Time) {
	server := x.Res.Server()
	for _, y := range c.nodes {
		same := y == x || x.Vouched && (grouped(x, y) ||
			// Not grouped at the last rebuild (x was down, or y): the same
			// server by identity and name.
			server != (checker.ServerID{}) && y.Res.Server() == server && sameName(x.Res.Name, y.Res.Name))
		if !same {
			continue
		}
		y.SyncState = ""
		y.back(at)
	}
}

// sameName reports whether two names a server was read under may be one
// server's: equal, or one unknown.
func sameName(a, b string) bool { return a == b || a == "" || b == "" }

// back records that walsender rows read before at speak of a run before
// the server's now behind x: it never moves back.
func (x *Node) back(at time.Time) {
	if x.backSince.Before(at) {
		x.backSince = at
	}
}

// sighted gives x, whose check finds a server x did not show before (also
// x's first), what an address that shows the server under the same name
// saw leave (a down, a restart: see serverLeft): a new address of a server
// that went down elsewhere has not seen it go. A new address that sees a
// server's new run first tells nothing of the old run shown elsewhere:
// replicas of one system may share a name (Patroni's scope as
// cluster_name, the fallback application_name "walreceiver"), and taking
// one's restart for another's took sync from replicas that never left.
func (c *Core) sighted(x *Node, res *checker.Result) {
	now := res.Server()
	if now == (checker.ServerID{}) || !res.InRecovery {
		return
	}
	for _, y := range c.nodes {
		if y != x && y.Res.Server() == now && sameName(y.Res.Name, res.Name) {
			x.back(y.backSince)
		}
	}
}

// restartRecorded reports whether a vouched node other than x, up, shows
// the server of res under its name and recorded its arrival (a restart
// seen there first), which x has from it (see sighted): x seeing it now
// is the same restart, not another.
func (c *Core) restartRecorded(x *Node, res *checker.Result) bool {
	server := res.Server()
	if server == (checker.ServerID{}) {
		return false
	}
	for _, y := range c.nodes {
		if y != x && y.live() && y.Vouched && y.Res.Server() == server && !y.backSince.IsZero() &&
			sameName(y.Res.Name, res.Name) {
			return true
		}
	}
	return false
}

// grouped reports whether the last dedup took x and y for one server: one
// is the other, or its alias, or both are aliases of one representative.
func grouped(x, y *Node) bool {
	return x == y || y.AliasOf == x || x.AliasOf == y || x.AliasOf != nil && y.AliasOf == x.AliasOf
}

// shareBack gives the addresses the last dedup took for one server (a
// vouched alias and its representative) the latest backSince either
// recorded: a down, a return or a restart seen at one address is the
// server's, whichever address stands for it next. An alias carried over a
// restart (the identities differ) is a restart seen when the newer server
// was first checked at its address.
func (c *Core) shareBack() {
	for _, x := range c.nodes {
		y := x.AliasOf
		if y == nil || !x.Vouched {
			continue
		}
		at := x.backSince
		if y.backSince.After(at) {
			at = y.backSince
		}
		if x.Res.Server() != y.Res.Server() {
			newer := x
			if y.Res.StartTime.After(x.Res.StartTime) {
				newer = y
			}
			if newer.serverSince.After(at) {
				at = newer.serverSince
			}
		}
		x.back(at)
		y.back(at)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// flapped records that x came back up at at, and damps it when that made
// FlapCount ups within FlapWindow.
func (c *Core) flapped(x *Node, at time.Time) {
	k := c.cfg.FlapCount
	if k <= 0 {
		return
	}
	x.ups = append(x.ups, at)
	if len(x.ups) > k {
		x.ups = x.ups[len(x.ups)-k:]
	}
	if len(x.ups) == k && at.Sub(x.ups[0]) <= c.cfg.FlapWindow {
		x.DampedUntil = at.Add(c.cfg.FlapCooldown)
		x.ups = x.ups[:0]
		c.log(slog.LevelWarn, "pgxha: node flapping: no plain reads for a while", "addr", x.Addr, "name", x.Name(),
			"ups", k, "within", c.cfg.FlapWindow.String(), "until", x.DampedUntil.Format(time.RFC3339))
	}
}

// AppError records an error the application met on id's connections: a
// node that is up keeps it as its last error until its next check.
func (c *Core) AppError(id ID, err error, at time.Time) {
	if x := c.Node(id); x != nil && x.Up {
		x.LastErr, x.LastErrAt = err, at
	}
	c.record(Entry{Kind: "apperror", At: at, ID: id, Err: errText(err)}, false)
}

// PromotionSeen records what a probe of id saw at at: it left recovery.
// The view takes the probe's figures at once (writable or not, timeline,
// WAL position), so that writes go to it without waiting for the full
// check; until then the other replicas keep their roles (the new master's
// pg_stat_replication is not known yet).
func (c *Core) PromotionSeen(id ID, p checker.Promotion, at time.Time) {
	x := c.Node(id)
	if x == nil || !x.Up || !x.Res.InRecovery {
		return
	}
	x.Res.InRecovery, x.Res.ReadOnly, x.Res.Timeline, x.Res.LSN = false, p.ReadOnly, p.Timeline, p.LSN
	x.Res.ReplayPaused, x.Res.Replicas = false, nil
	x.ResAt, x.Partial = at, true
	c.replicasChanged = at
	c.log(slog.LevelDebug, "pgxha: node left recovery", "addr", x.Addr, "name", x.Name(), "timeline", p.Timeline, "read_only", p.ReadOnly)
	c.rebuild(at, nil)
	c.record(Entry{Kind: "promotion", At: at, ID: id, Promotion: &p}, false)
}

// ForgetTimeline forgets the newest timeline seen and, unless pinned, the
// cluster, and derives both again from what the nodes report now: the
// operator's way out of a stale master that is to take writes again (the
// writes of the newer timeline are given up). Replicas that have WAL the
// writable nodes lack stop counting against them too, until a master is
// elected on a newer timeline.
func (c *Core) ForgetTimeline(at time.Time) {
	c.log(slog.LevelWarn, "pgxha: highest timeline forgotten", "was", c.Timeline())
	c.cluster, c.keptTL = c.cfg.SystemID, 0
	for _, x := range c.nodes {
		x.seenTL, x.proofs, x.ahead, x.parked = 0, nil, nil, nil
		x.pre = nil
		if x.mayWrite() && x.Vouched && (c.cluster == 0 || x.Res.SystemID == c.cluster) {
			c.ignoreAhead = max(c.ignoreAhead, x.Res.Timeline)
		}
	}
	c.rebuild(at, nil)
	c.record(Entry{Kind: "forget", At: at}, false)
}

// Reconsider derives every role again (after the shell changed something
// routing reads but the core does not see, such as tags).
func (c *Core) Reconsider(now time.Time) {
	c.rebuild(now, nil)
	c.record(Entry{Kind: "reconsider", At: now}, false)
}
