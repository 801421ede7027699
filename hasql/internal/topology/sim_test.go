package topology

import (
	"errors"
	"fmt"
	"math/rand"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// The simulation: the model's servers behind members (addresses) the core
// is told about, checks whose answers are sampled from the model while
// they run and delivered late, in any order across nodes, lost (timeouts)
// or refused; clients that write through the master the core elects, on
// connections the core may order cut; faults from a schedule. Invariants
// are checked after every event the core takes.

// opKind is a fault or an operation of a schedule.
type opKind int

const (
	opCrash        opKind = iota // a server crashes (connections refused)
	opRestart                    // a crashed server starts again (as it was: a master comes back writable)
	opHang                       // a server freezes, or its network is cut: checks time out
	opResume                     // it answers again
	opFailover                   // the master is fenced (stopped) and the standby with every acknowledged write promoted
	opRoguePromote               // a replica is promoted while the master runs
	opRejoin                     // a server that is not master rewinds and follows the master
	opPauseReplay                // a replica's replay is paused
	opResumeReplay               // and resumed
	opCascade                    // a replica streams from another replica
	opRemove                     // discovery drops a member
	opReadd                      // discovery brings a dropped member back
	opAddReplica                 // a new replica is cloned and discovered
	opAddRogue                   // a rogue server joins the discovered set
	opAddForeign                 // a server of another cluster joins the discovered set
	opSlowChecks                 // checks of a member take long (answers delayed)
	opMoveName                   // a member's address (a DNS name, a virtual IP) moves to another server
	opSwitchWAL                  // the master switches to a new WAL segment (pg_switch_wal, a base backup's end)
	opKinds

	// opStranger: a standby outside the node set comes or goes (see
	// model.stranger); not drawn by randomConfig, TestTruthStaleness adds it.
	opStranger opKind = 100
	// opNameMember: the source names a member by the server its address
	// reaches now (Patroni's member name is what that server streams
	// as), or drops its name; a name moved since leaves the source
	// behind. Not drawn by randomConfig: TestSimulationMemberNames adds it.
	opNameMember opKind = 101
)

var opNames = [...]string{"crash", "restart", "hang", "resume", "failover", "rogue-promote", "rejoin",
	"pause-replay", "resume-replay", "cascade", "remove", "readd", "add-replica", "add-rogue", "add-foreign", "slow-checks", "move-name", "switch-wal"}

func (k opKind) String() string {
	switch k {
	case opStranger:
		return "stranger"
	case opNameMember:
		return "name-member"
	}
	return opNames[k]
}

// op is one step of a schedule: at step at, do kind to the target chosen
// by arg (an index taken modulo what fits).
type op struct {
	at   int
	kind opKind
	arg  int
}

func (o op) String() string { return fmt.Sprintf("%d:%s(%d)", o.at, o.kind, o.arg) }

// simConfig is one simulated cluster and its settings.
type simConfig struct {
	replicas   int
	syncK      int  // synchronous standbys the master waits for (0: async)
	any        bool // ANY k (quorum) rather than FIRST k
	pin        bool // the system identifier is pinned
	restricted bool // the check user lacks pg_monitor
	roleUser   bool // the check user is the replication role (see model.roleUser)
	alias      bool // server 0 is reachable under a second address too
	stranger   bool // synchronous_standby_names lists a standby outside the set first (see model.stranger)
	// strangerHost: the stranger runs on that server's machine (see
	// model.strangerHost); 0: on a machine of its own.
	strangerHost int
	steps        int
	// interval is the steady check interval (0: 500 ms).
	interval time.Duration
	// linger is how many steps the replication connections of a server
	// that hangs outlive it (see server.linger).
	linger int
}

func (c simConfig) String() string {
	return fmt.Sprintf("replicas=%d sync=%d any=%v pin=%v restricted=%v roleUser=%v alias=%v stranger=%v strangerHost=%d steps=%d linger=%d",
		c.replicas, c.syncK, c.any, c.pin, c.restricted, c.roleUser, c.alias, c.stranger, c.strangerHost, c.steps, c.linger)
}

// randomConfig draws a cluster and a schedule from seed.
func randomConfig(seed int64, steps int) (simConfig, []op) {
	rng := rand.New(rand.NewSource(seed))
	cfg := simConfig{
		replicas:   1 + rng.Intn(4),
		pin:        rng.Intn(3) == 0,
		restricted: rng.Intn(6) == 0,
		alias:      rng.Intn(4) == 0,
		any:        rng.Intn(3) == 0,
		steps:      steps,
	}
	cfg.syncK = rng.Intn(min(cfg.replicas, 2) + 1)
	// Drawn apart, so that the rest of a seed's schedule is what it was
	// before lingering connections were modelled.
	if lr := rand.New(rand.NewSource(seed ^ 0x6c696e676572)); lr.Intn(2) == 0 {
		cfg.linger = 1 + lr.Intn(200)
	}
	var ops []op
	for at := 10; at < steps; at += 1 + rng.Intn(40) {
		ops = append(ops, op{at: at, kind: opKind(rng.Intn(int(opKinds))), arg: rng.Intn(1 << 16)})
	}
	return cfg, ops
}

type simMember struct {
	Member
	server int // the server it reaches
	home   int // the server it reached when it joined (see opMoveName)
	gone   bool
}

type txn struct {
	member ID
	server int
	start  int64 // the server's start time when the connection was made: it dies with a restart
	cut    bool
	seq    int
	// until: a long transaction is not committed before then (the
	// application holds it open through whatever happens meanwhile).
	until time.Time
}

// alive reports whether t's connection still reaches the server instance
// it was opened to (a restart ends it).
func (t *txn) alive(md *model) bool { return md.servers[t.server].start == t.start }

type inflight struct {
	id       ID
	began    time.Time
	sampleAt time.Time
	ended    time.Time
	sampled  bool
	readAll  bool   // the shell asked for the walsenders (see Core.WantReplicas)
	remote   string // the address the check connection reached
	res      checker.Result
	err      error
	timeout  bool
	server   int // the server that answered (the member's at the sample)
}

// sendersEvery is the PostgreSQL checker's: a master's walsenders are read
// at least every sendersEvery checks.
const sendersEvery = 4

// simSenders is what a check connection keeps of a master's walsenders,
// as the PostgreSQL checker does (see checker.Result.ReplicasCached).
type simSenders struct {
	server    checker.ServerID
	replicas  []checker.Replica
	syncNames string
	since     int
}

// cached has the check of mb answer as the PostgreSQL checker does on a
// master whose walsenders are not due: their last read, flagged.
func (s *sim) cached(mb *simMember, c *inflight, srv *server) {
	res := &c.res
	ss := s.senders[mb.ID]
	names := fmt.Sprint(srv.syncNames, srv.syncK, srv.first)
	if res.InRecovery {
		delete(s.senders, mb.ID)
		return
	}
	if ss != nil && ss.server == res.Server() && ss.since < sendersEvery-1 && !c.readAll && ss.syncNames == names {
		ss.since++
		res.Replicas, res.ReplicasCached = slices.Clone(ss.replicas), true
		s.cachedChecks++
		return
	}
	s.senders[mb.ID] = &simSenders{server: res.Server(), replicas: slices.Clone(res.Replicas), syncNames: names}
}

type sim struct {
	cfg  simConfig
	rng  *rand.Rand
	md   *model
	core *Core
	// shadow is a core fed the same events but none of the rogues': the
	// master a rogue's answers let the core elect must be the one the
	// core would elect without them (or none: while a rogue stays, it
	// may hold writes up, see checkShadow).
	shadow *Core
	// unvouchedByNamesake holds the nodes the shadow vouched for while
	// the core did not, at some check so far (a rogue namesake made their
	// walsender rows ambiguous): what they proved then (a newer
	// timeline) counts in the shadow only, and may outlive the namesake.
	unvouchedByNamesake map[ID]bool
	// shadowDiverged: the shadow took a timeline from such a node (see
	// checkShadow).
	shadowDiverged bool
	// inShadow: whether each member is in the shadow's set now (it reaches
	// no rogue); rejoined: the members back in it after reaching a rogue,
	// new nodes to the shadow (see checkShadow).
	inShadow, rejoined map[ID]bool
	// answered is the server whose answer each member's last check
	// delivered: a name may have moved since.
	answered map[ID]int
	// keptTL is, per system identifier, the newest timeline of a
	// master the core elected, or a node the user named showed, while
	// anchored: no master on an older one is elected after it (DESIGN:
	// the Manager remembers the highest timeline it has seen on a
	// master), until the operator's ForgetTimeline.
	keptTL  map[uint64]uint32
	now     time.Time
	members []*simMember
	nextID  ID
	checks  map[ID]*inflight
	senders map[ID]*simSenders // per check connection
	// cachedChecks counts the checks that reused a master's walsenders.
	cachedChecks int
	// observe, if set, is called after every step of run.
	observe  func()
	next     map[ID]time.Time
	slow     map[ID]bool
	fast     bool
	txns     []*txn
	seq      int
	trace    []string
	pinned   uint64
	faulting bool
	// The master after the last event and the server each node reached
	// then (see applied), and a cut that reached the still-elected
	// master's server, reported by the next check.
	lastMaster  ID
	lastServer  checker.ServerID
	lastServers map[ID]checker.ServerID
	needlessCut error
}

// interval is the steady check interval.
func (s *sim) interval() time.Duration {
	if s.cfg.interval > 0 {
		return s.cfg.interval
	}
	return 500 * time.Millisecond
}

// simEpoch is when every simulation starts: the checks' clock (see
// UntilTick).
var simEpoch = time.Unix(1_700_000_000, 0)

var errCheckRefused = errors.New("connection refused")
var errCheckTimeout = errors.New("check timed out")

func newSim(cfg simConfig, seed int64, record func(Entry)) *sim {
	rng := rand.New(rand.NewSource(seed ^ 0x5DEECE66D))
	s := &sim{cfg: cfg, rng: rng, now: simEpoch,
		checks: map[ID]*inflight{}, senders: map[ID]*simSenders{}, next: map[ID]time.Time{}, slow: map[ID]bool{}, answered: map[ID]int{}, keptTL: map[uint64]uint32{}, faulting: true}
	s.md = newModel(rng, rand.New(rand.NewSource(seed^0x6C0C6)), cfg.replicas, cfg.syncK, cfg.any)
	s.md.restricted, s.md.roleUser, s.md.strangerHost = cfg.restricted, cfg.roleUser, cfg.strangerHost
	if s.md.strangerListed = cfg.stranger; cfg.stranger {
		s.md.setSync(s.md.servers[0], cfg.syncK, !cfg.any)
	}
	s.md.addrOf = func(server int) (string, uint16) {
		// A server's own address (its machine's): that of the member it
		// joined with, wherever names moved since (see opMoveName).
		for _, mb := range s.members {
			if mb.home == server {
				return mb.Host, 5432
			}
		}
		return "", 0
	}
	if cfg.pin {
		s.pinned = s.md.servers[0].sysid
	}
	tc := Config{SystemID: s.pinned, Record: record}
	if seed%3 == 0 {
		// Flap damping that a schedule's crashes and restarts can reach.
		tc.FlapCount, tc.FlapWindow, tc.FlapCooldown = 2, 5*time.Second, 2*time.Second
	}
	s.core = New(tc)
	s.shadow = New(Config{SystemID: tc.SystemID, FlapCount: tc.FlapCount, FlapWindow: tc.FlapWindow, FlapCooldown: tc.FlapCooldown})
	for i := range s.md.servers {
		s.addMember(i, true)
	}
	if cfg.alias {
		s.addMember(0, true)
	}
	s.setMembers()
	return s
}

func (s *sim) addMember(server int, trusted bool) *simMember {
	id := s.nextID
	s.nextID++
	mb := &simMember{Member: Member{ID: id, Addr: fmt.Sprintf("10.0.0.%d:5432", id+1), Host: fmt.Sprintf("10.0.0.%d", id+1), Trusted: trusted}, server: server, home: server}
	s.members = append(s.members, mb)
	s.next[id] = s.now
	return mb
}

// liveMembers returns the members in the set (not dropped).
func (s *sim) liveMembers() []*simMember {
	var live []*simMember
	for _, mb := range s.members {
		if !mb.gone {
			live = append(live, mb)
		}
	}
	return live
}

func (s *sim) member(id ID) *simMember {
	for _, mb := range s.members {
		if mb.ID == id {
			return mb
		}
	}
	return nil
}

// answerer is the server whose answer member id's last check delivered.
func (s *sim) answerer(id ID) int {
	if i, ok := s.answered[id]; ok {
		return i
	}
	return s.member(id).server
}

// rogue reports whether member id is a rogue server's.
func (s *sim) rogue(id ID) bool {
	mb := s.member(id)
	return mb != nil && s.md.servers[mb.server].rogue
}

// shadowMembers gives the shadow the members that reach no rogue.
func (s *sim) shadowMembers() {
	var set []Member
	if s.inShadow == nil {
		s.inShadow, s.rejoined = make(map[ID]bool), make(map[ID]bool)
	}
	for _, mb := range s.members {
		in := !mb.gone && !s.md.servers[mb.server].rogue
		if in {
			set = append(set, mb.Member)
			if seen, ok := s.inShadow[mb.ID]; ok && !seen {
				s.rejoined[mb.ID] = true
			}
		}
		s.inShadow[mb.ID] = in
	}
	s.shadow.SetMembers(s.now, set)
}

func (s *sim) setMembers() {
	var set []Member
	for _, mb := range s.members {
		if !mb.gone {
			set = append(set, mb.Member)
		}
	}
	s.core.SetMembers(s.now, set)
	s.shadowMembers()
	s.applied("set")
}

func (s *sim) tracef(format string, args ...any) {
	s.trace = append(s.trace, fmt.Sprintf("%6dms ", s.now.Sub(time.Unix(1_700_000_000, 0)).Milliseconds())+fmt.Sprintf(format, args...))
}

// run plays the schedule, then lets the faults end and the cluster be
// repaired, and checks that the view converges to the truth. It returns
// the first invariant broken.
func (s *sim) run(ops []op) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	oi := 0
	for step := 0; step < s.cfg.steps; step++ {
		for oi < len(ops) && ops[oi].at <= step {
			s.do(ops[oi])
			oi++
			if err := s.check(); err != nil {
				return err
			}
			s.observed()
		}
		if err := s.tick(); err != nil {
			return err
		}
		s.observed()
	}
	// The faults end: every server answers, the cluster is repaired the
	// way an operator or Patroni would, rogues and foreigners leave.
	s.faulting = false
	s.repair()
	if err := s.check(); err != nil {
		return err
	}
	s.observed()
	for step := 0; step < 400; step++ {
		if err := s.tick(); err != nil {
			return err
		}
		s.observed()
	}
	return s.converged()
}

// observed calls the observer, if any, after a step (see TestTruthStaleness).
func (s *sim) observed() {
	if s.observe != nil {
		s.observe()
	}
}

// tick advances time by a few milliseconds: WAL moves, clients write and
// commit, checks begin, are sampled and end.
func (s *sim) tick() error {
	s.now = s.now.Add(time.Duration(1+s.rng.Intn(25)) * time.Millisecond)
	s.md.replicate()
	s.client()
	s.ack()
	// Checks: sample those under way, deliver those that ended, in the
	// order they ended.
	ids := make([]ID, 0, len(s.checks))
	for id := range s.checks {
		ids = append(ids, id)
	}
	slices.Sort(ids) // map order would make a run depend on more than its seed
	for _, id := range ids {
		if c := s.checks[id]; !c.sampled && !c.sampleAt.After(s.now) {
			s.sample(c)
		}
	}
	for {
		var due *inflight
		for _, c := range s.checks {
			if c.sampled && !c.ended.After(s.now) && (due == nil || c.ended.Before(due.ended) || c.ended.Equal(due.ended) && c.id < due.id) {
				due = c
			}
		}
		if due == nil {
			break
		}
		delete(s.checks, due.id)
		if err := s.deliver(due); err != nil {
			return err
		}
	}
	// While checks are fast, replicas are probed for a promotion between
	// checks (hasql's WatchPromotion): a probe that finds one out of
	// recovery reports it at once. The application meets errors too.
	// The probe runs on the check connection: it asks the server the last
	// check reached, also when the member's name has moved since.
	for _, mb := range s.members {
		if mb.gone || !s.fast || s.rng.Intn(4) != 0 {
			continue
		}
		x := s.core.Node(mb.ID)
		at, ok := s.answered[mb.ID]
		if !ok {
			continue
		}
		srv := s.md.servers[at]
		if x == nil || !x.Up || !x.Res.InRecovery || srv.down || srv.hung {
			continue
		}
		var p *checker.Promotion
		switch {
		case srv.rogue:
			p = &checker.Promotion{ReadOnly: s.rng.Intn(3) == 0, Timeline: uint32(1 + s.rng.Intn(6)), LSN: checker.LSN(s.rng.Int63n(1 << 20))}
		case !srv.recovery:
			p = &checker.Promotion{ReadOnly: srv.readOnly, Timeline: srv.tl(), LSN: srv.lsn}
		}
		if p != nil {
			s.core.PromotionSeen(mb.ID, *p, s.now)
			if !srv.rogue {
				s.shadow.PromotionSeen(mb.ID, *p, s.now)
			}
			s.tracef("probe %s: promoted tl=%d ro=%v", mb.Addr, p.Timeline, p.ReadOnly)
			s.applied("probe")
			if err := s.check(); err != nil {
				return err
			}
		}
	}
	if s.rng.Intn(50) == 0 && len(s.members) > 0 {
		mb := s.members[s.rng.Intn(len(s.members))]
		if !mb.gone {
			s.core.AppError(mb.ID, errors.New("conn closed"), s.now)
			if !s.rogue(mb.ID) {
				s.shadow.AppError(mb.ID, errors.New("conn closed"), s.now)
			}
			s.applied("apperror")
		}
	}
	for _, mb := range s.members {
		if mb.gone {
			continue
		}
		if _, busy := s.checks[mb.ID]; busy || s.next[mb.ID].After(s.now) {
			continue
		}
		lat := time.Duration(1+s.rng.Intn(8)) * time.Millisecond
		if s.slow[mb.ID] {
			lat += time.Duration(s.rng.Intn(400)) * time.Millisecond
		}
		a := time.Duration(s.rng.Int63n(int64(lat)))
		s.checks[mb.ID] = &inflight{id: mb.ID, began: s.now, sampleAt: s.now.Add(a), ended: s.now.Add(lat), readAll: s.core.WantReplicas(mb.ID, s.now, s.interval())}
		if !s.rogue(mb.ID) {
			s.shadow.WantReplicas(mb.ID, s.now, s.interval())
		}
	}
	return nil
}

// sample computes a check's answer from the model as it is now.
func (s *sim) sample(c *inflight) {
	c.sampled = true
	mb := s.member(c.id)
	if mb == nil || mb.gone {
		c.err = errCheckRefused // left the set: dropped when it ends
		return
	}
	srv := s.md.servers[mb.server]
	switch {
	case srv.down:
		c.err, c.ended = errCheckRefused, c.sampleAt.Add(time.Millisecond)
	case srv.hung:
		c.err, c.timeout, c.ended = errCheckTimeout, true, c.began.Add(800*time.Millisecond)
	default:
		c.server = mb.server
		c.res = s.md.observe(srv, c.sampleAt)
		s.cached(mb, c, srv)
		c.remote = mb.Host
		if mb.server != mb.home {
			// A name that moved: it resolves to the address of the
			// machine it reaches now.
			c.remote, _ = s.md.addrOf(mb.server)
		}
	}
}

func (s *sim) deliver(c *inflight) error {
	mb := s.member(c.id)
	if mb == nil || mb.gone {
		return nil
	}
	again := false
	if c.err != nil {
		delete(s.senders, c.id) // the check connection is closed
		again = s.core.CheckFailed(c.id, c.err, c.timeout, c.ended)
		if !s.rogue(c.id) {
			s.shadow.CheckFailed(c.id, c.err, c.timeout, c.ended)
		}
		s.tracef("check %s: %v", mb.Addr, c.err)
	} else {
		s.core.CheckOK(c.id, c.res, c.began, c.ended, c.remote)
		s.answered[c.id] = c.server
		if !s.rogue(c.id) {
			s.shadow.CheckOK(c.id, c.res, c.began, c.ended, c.remote)
		}
		s.tracef("check %s: recovery=%v ro=%v tl=%d/%d lsn=%s recv=%s sys=%d rows=%d", mb.Addr, c.res.InRecovery, c.res.ReadOnly,
			c.res.Timeline, c.res.ReceiveTimeline, c.res.LSN, c.res.ReceiveLSN, c.res.SystemID%1000, len(c.res.Replicas))
	}
	s.applied("check")
	interval := s.interval()
	if s.fast {
		interval = 20 * time.Millisecond
	}
	wait := UntilTick(c.ended.Sub(simEpoch), interval) // as the shell schedules
	if again {
		wait = 0
	}
	s.next[c.id] = c.ended.Add(wait)
	return s.check()
}

// applied carries out the core's actions as the shell does: cuts first.
func (s *sim) applied(what string) {
	r := s.core.TakeReady()
	s.shadow.TakeReady()
	if m := s.core.Elected().Master; m != nil && s.needlessCut == nil && s.lastMaster != None && s.lastServer == m.Res.Server() {
		// No cut reaches the master's server while it stays master:
		// neither the node it is elected through nor another address of
		// it that answers and reached it before the event too. Nothing
		// another server could have taken happened; the writes in flight
		// would fail for nothing.
		for _, id := range r.Cut {
			x := s.core.Node(id)
			if id == m.ID && s.lastMaster == m.ID ||
				x != nil && x != m && x.Up && !x.Suspect && x.Res.Server() == m.Res.Server() &&
					s.lastServers[id] == m.Res.Server() && s.member(id).server == s.member(m.ID).server {
				s.needlessCut = fmt.Errorf("%s cut node %d, which reaches the still-elected master %s's server, at %s", what, id, m.Addr, s.now.Format("15:04:05.000"))
			}
		}
	}
	if s.lastServers == nil {
		s.lastServers = map[ID]checker.ServerID{}
	}
	clear(s.lastServers)
	for _, x := range s.core.Nodes() {
		s.lastServers[x.ID] = x.Res.Server()
	}
	s.lastMaster = None
	if m := s.core.Elected().Master; m != nil {
		s.lastMaster, s.lastServer = m.ID, m.Res.Server()
	}
	for _, id := range r.Cut {
		for _, t := range s.txns {
			if t.member == id {
				t.cut = true
			}
		}
		s.tracef("cut %d", id)
	}
	for _, rc := range r.RoleChanges {
		s.tracef("role %d: %s -> %s", rc.ID, rc.From, rc.To)
	}
	if r.CheckOthers {
		for id := range s.next {
			s.next[id] = s.now
		}
	}
	s.fast = r.Fast
}

// client begins write transactions on the elected master and commits
// some of those open.
func (s *sim) client() {
	if m := s.core.Elected().Master; m != nil && s.rng.Intn(3) == 0 {
		mb := s.member(m.ID)
		// A connection opened through a name that moved since the
		// master's check reaches another server: the shell refuses it
		// (see hasql's sameServer).
		if srv := s.md.servers[mb.server]; srv.sysid == m.Res.SystemID && srv.start == m.Res.StartTime.UnixMicro() {
			s.seq++
			t := &txn{member: m.ID, server: mb.server, start: srv.start, seq: s.seq}
			if s.rng.Intn(8) == 0 {
				t.until = s.now.Add(time.Duration(1+s.rng.Intn(8)) * time.Second)
			}
			s.txns = append(s.txns, t)
		}
	}
	if len(s.txns) == 0 || s.rng.Intn(2) == 0 {
		return
	}
	i := s.rng.Intn(len(s.txns))
	t := s.txns[i]
	if t.until.After(s.now) {
		return // held open
	}
	s.txns = slices.Delete(s.txns, i, i+1)
	srv := s.md.servers[t.server]
	if t.cut || !t.alive(s.md) || srv.down || srv.hung || srv.recovery || srv.readOnly {
		return // the commit fails: nothing acknowledged
	}
	srv.padTo = 0 // the commit's flush writes the padding before it
	srv.lsn += checker.LSN(8 + s.rng.Intn(200))
	w := &write{id: t.seq, server: t.server, branch: srv.hist[len(srv.hist)-1].id, lsn: srv.lsn}
	if m := s.core.Elected().Master; m == nil || m.ID == t.member {
		w.exempt = "" // decided at acknowledgement
	} else {
		w.exempt = "-" // committed while the core named another master: never exempt
	}
	s.md.writes = append(s.md.writes, w)
}

// ack acknowledges the writes their server's synchronous standbys have
// confirmed. A write acknowledged on a branch another server already
// forked off before it is PostgreSQL's loss (a promotion the router did
// not order), unless the core had named another master when it committed.
func (s *sim) ack() {
	for _, w := range s.md.writes {
		if w.acked {
			continue
		}
		srv := s.md.servers[w.server]
		if srv.down || srv.hung || srv.recovery || srv.hist[len(srv.hist)-1].id != w.branch || !s.md.confirmed(srv, w.lsn) {
			continue
		}
		w.acked = true
		if w.exempt == "-" {
			w.exempt = ""
			continue
		}
		for _, o := range s.md.servers {
			if o != srv && !o.rogue && !o.foreign && forkedBefore(o, w.branch, w.lsn) {
				w.exempt = "acknowledged on a branch " + o.name + " had already forked off"
			}
		}
	}
}

// forkedBefore reports whether s's history left branch b before lsn.
func forkedBefore(s *server, b int, lsn checker.LSN) bool {
	for i, h := range s.hist {
		if h.id == b && i+1 < len(s.hist) && s.hist[i+1].start < lsn {
			return true
		}
	}
	return false
}

// do carries out one operation of the schedule.
func (s *sim) do(o op) {
	md := s.md
	var honest []*server
	for _, x := range md.servers {
		if !x.rogue && !x.foreign {
			honest = append(honest, x)
		}
	}
	pick := func(f func(*server) bool) *server {
		var c []*server
		for _, x := range honest {
			if f(x) {
				c = append(c, x)
			}
		}
		if len(c) == 0 {
			return nil
		}
		return c[o.arg%len(c)]
	}
	truth := md.master()
	s.tracef("op %s", o)
	switch o.kind {
	case opCrash:
		if x := pick(func(x *server) bool { return !x.down }); x != nil {
			x.down = true
		}
	case opRestart:
		if x := pick(func(x *server) bool { return x.down }); x != nil {
			x.down = false
			md.restart(x)
		}
	case opHang:
		if x := pick(func(x *server) bool { return !x.hung && !x.down }); x != nil {
			x.hung, x.linger = true, s.cfg.linger
		}
	case opResume:
		if x := pick(func(x *server) bool { return x.hung }); x != nil {
			x.hung = false
		}
	case opFailover:
		s.failover(truth, o.arg)
	case opRoguePromote:
		if x := pick(func(x *server) bool { return x.recovery && !x.down }); x != nil {
			s.exemptMissing(x)
			md.promote(x)
		}
	case opRejoin:
		if truth == nil {
			return
		}
		if x := pick(func(x *server) bool { return x != truth && !x.down }); x != nil {
			md.demote(x, truth)
			x.hung = false
		}
	case opPauseReplay:
		if x := pick(func(x *server) bool { return x.recovery }); x != nil {
			x.paused = true
		}
	case opResumeReplay:
		if x := pick(func(x *server) bool { return x.paused }); x != nil {
			x.paused = false
		}
	case opCascade:
		x := pick(func(x *server) bool { return x.recovery })
		y := pick(func(y *server) bool { return y.recovery && y != x })
		if x != nil && y != nil && y.upstream != x.idx {
			x.upstream = y.idx
			for _, m := range md.servers {
				if slices.Contains(m.syncNames, x.name) {
					m.syncNames = slices.DeleteFunc(slices.Clone(m.syncNames), func(n string) bool { return n == x.name })
					m.syncK = min(m.syncK, len(m.syncNames))
				}
			}
		}
	case opRemove:
		live := s.liveMembers()
		if len(live) > 1 {
			live[o.arg%len(live)].gone = true
			s.setMembers()
		}
	case opReadd:
		var gone []*simMember
		for _, mb := range s.members {
			if mb.gone && !md.servers[mb.server].rogue && !md.servers[mb.server].foreign {
				gone = append(gone, mb)
			}
		}
		if len(gone) > 0 {
			// Back under a new address: a node is new to the set.
			old := gone[o.arg%len(gone)]
			s.addMember(old.server, old.Trusted)
			s.setMembers()
		}
	case opAddReplica:
		if truth == nil || len(md.servers) > 8 {
			return
		}
		x := &server{idx: len(md.servers), sysid: truth.sysid, clock: md.hostClock(), name: fmt.Sprintf("n%d", len(md.servers)+1),
			hist: slices.Clone(truth.hist), lsn: truth.written(), recv: truth.written(), upstream: truth.idx, recovery: true, readOnly: true}
		x.start = md.startTime(x.clock)
		md.servers = append(md.servers, x)
		s.addMember(x.idx, false)
		s.setMembers()
	case opAddRogue, opAddForeign:
		if len(md.servers) > 8 {
			return
		}
		x := &server{idx: len(md.servers), sysid: 9000000000000000000 + uint64(o.arg), clock: md.hostClock(),
			hist: []branch{{id: md.nextBr, tl: uint32(1 + o.arg%4)}}, lsn: checker.LSN(o.arg * 100), upstream: -1}
		x.start = md.startTime(x.clock)
		md.nextBr++
		// A namesake of one of ours: the unfriendly case.
		x.name = honest[o.arg%len(honest)].name
		if o.kind == opAddRogue {
			x.rogue = true
		} else {
			x.foreign = true
			x.recovery, x.readOnly = o.arg%2 == 0, o.arg%2 == 0
			x.recv = x.lsn
		}
		md.servers = append(md.servers, x)
		s.addMember(x.idx, false)
		s.setMembers()
	case opStranger:
		md.stranger = !md.stranger
	case opNameMember:
		live := s.liveMembers()
		mb := live[o.arg%len(live)]
		name := md.servers[mb.server].name
		if (o.arg/7)%4 == 0 {
			name = ""
		}
		if mb.Name == name {
			return
		}
		s.tracef("name %s: %q -> %q", mb.Addr, mb.Name, name)
		mb.Name = name
		s.setMembers()
	case opSwitchWAL:
		if truth != nil && !truth.down && !truth.hung {
			md.switchWAL(truth)
		}
	case opMoveName:
		// Mostly to the master, as a failover script moves a name; now
		// and then to another server of the cluster (a stale record).
		// Connections opened before stay with the server they reached.
		live := s.liveMembers()
		mb := live[o.arg%len(live)]
		var to []int
		for i, x := range md.servers {
			if i != mb.server && !x.rogue && !x.foreign {
				to = append(to, i)
			}
		}
		if len(to) == 0 {
			return
		}
		dst := to[(o.arg/7)%len(to)]
		if m := md.master(); m != nil && m.idx != mb.server && (o.arg/3)%3 != 0 {
			dst = m.idx
		}
		s.tracef("move %s: %s -> %s", mb.Addr, md.servers[mb.server].name, md.servers[dst].name)
		mb.server = dst
		s.shadowMembers() // a rogue's name may reach one of ours now, or the reverse
	case opSlowChecks:
		live := s.liveMembers()
		mb := live[o.arg%len(live)]
		s.slow[mb.ID] = !s.slow[mb.ID]
	}
}

// failover does what Patroni does: the master (if any) is fenced, and the
// standby that has every acknowledged write of its branch is promoted; the
// others follow it. With no such standby (async, or the sync one down),
// an async failover promotes the most advanced replica and the writes it
// lacks are PostgreSQL's loss.
func (s *sim) failover(old *server, arg int) {
	md := s.md
	var best *server
	for _, x := range md.servers {
		if x.rogue || x.foreign || x.down || x.hung || !x.recovery {
			continue
		}
		if old != nil && !canStream(x, old) && x.upstream == old.idx {
			continue
		}
		if best == nil || max(x.lsn, x.recv) > max(best.lsn, best.recv) {
			best = x
		}
	}
	if best == nil {
		return
	}
	if old != nil {
		old.down = true // fenced: stopped
	}
	s.exemptMissing(best)
	md.promote(best)
	for _, x := range md.servers {
		if x != best && x.recovery && !x.rogue && !x.foreign {
			x.upstream = best.idx
		}
	}
	md.setSync(best, s.cfg.syncK, !s.cfg.any)
}

// exemptMissing marks the acknowledged writes x lacks as lost by
// PostgreSQL: promoting x loses them whatever the router does.
func (s *sim) exemptMissing(x *server) {
	for _, w := range s.md.writes {
		if w.acked && w.exempt == "" && !x.has(w.branch, w.lsn) {
			w.exempt = "not on " + x.name + " when it was promoted"
		}
	}
}

// repair ends the faults: every server answers, rogues and foreigners
// leave the set, a master is made if there is none (failover), and every
// other server rejoins it.
func (s *sim) repair() {
	md := s.md
	for _, mb := range s.members {
		if mb.server != mb.home {
			s.tracef("move %s back: %s -> %s", mb.Addr, md.servers[mb.server].name, md.servers[mb.home].name)
			mb.server = mb.home // names point where they did
		}
		srv := md.servers[mb.server]
		if srv.rogue || srv.foreign {
			mb.gone = true
		}
	}
	s.slow = map[ID]bool{}
	md.stranger = false
	for _, x := range md.servers {
		x.hung = false
		if x.down {
			x.down = false
			md.restart(x)
		}
	}
	// More than one writable: keep the one on the newest branch with the
	// most WAL (what an operator would keep), demote the rest.
	var writable []*server
	for _, x := range md.servers {
		if !x.rogue && !x.foreign && !x.recovery && !x.readOnly {
			writable = append(writable, x)
		}
	}
	var keep *server
	for _, x := range writable {
		if keep == nil || x.tl() > keep.tl() || x.tl() == keep.tl() && x.lsn > keep.lsn {
			keep = x
		}
	}
	if keep == nil {
		s.failover(nil, 0)
		keep = md.master()
		if keep == nil {
			// Nothing to promote: start the first server afresh as master.
			keep = md.servers[0]
			keep.recovery, keep.readOnly, keep.upstream = false, false, -1
		}
	}
	for _, x := range writable {
		if x != keep {
			s.tracef("repair: %s loses its writes past the fork", x.name)
			for _, w := range md.writes {
				if w.acked && w.exempt == "" && w.server == x.idx && !keep.has(w.branch, w.lsn) {
					w.exempt = "on a server demoted by the repair (split brain)"
				}
			}
		}
	}
	for _, x := range md.servers {
		if x != keep && !x.rogue && !x.foreign {
			x.paused = false
			md.demote(x, keep)
		}
	}
	md.setSync(keep, s.cfg.syncK, !s.cfg.any)
	// Members that were dropped come back (the set is whole again).
	for _, mb := range s.members {
		srv := md.servers[mb.server]
		if mb.gone && !srv.rogue && !srv.foreign {
			s.addMember(mb.server, mb.Trusted)
			mb.server = -1
		}
	}
	s.members = slices.DeleteFunc(s.members, func(mb *simMember) bool { return mb.server < 0 })
	// A source that named members catches up: each goes by its server's
	// name (see opNameMember).
	for _, mb := range s.members {
		if mb.Name != "" {
			mb.Name = md.servers[mb.server].name
		}
	}
	s.setMembers()
	s.tracef("repair: master %s", keep.name)
}

// check tests the invariants on the core's view as it is now.
// checkShadow: the rogues' answers never make the core elect a master it
// would not elect without them. They may leave it with none for as long as
// they stay (a namesake of a replica makes a first master's confirmation
// ambiguous), which the convergence after the repair bounds; and while a
// namesake leaves one of ours unvouched (its walsender row could be the
// rogue's), that node's claims (a newer timeline, being writable) count
// for nothing, as a rogue's would not, so the core may keep a master that,
// without the rogue, it would find stale or in a split brain: no
// comparison then, nor, once the shadow took a newer timeline from such a
// node, for the rest of the schedule.
func (s *sim) checkShadow(e Election) error {
	for _, y := range s.shadow.Nodes() {
		x := s.core.Node(y.ID)
		if y.Vouched && x != nil && !x.Vouched {
			if s.unvouchedByNamesake == nil {
				s.unvouchedByNamesake = make(map[ID]bool)
			}
			s.unvouchedByNamesake[y.ID] = true
		}
		if x != nil && s.unvouchedByNamesake[y.ID] && y.seenTL > x.seenTL {
			// The shadow took a newer timeline from a node the core had
			// unvouched: from then on the two may follow different
			// timelines for good (a name moved off that server and a
			// replica promoted on another branch is master to the core,
			// and behind to the shadow), so they are not compared again.
			s.shadowDiverged = true
		}
	}
	if e.Master == nil || s.shadowDiverged {
		return nil
	}
	for _, y := range s.shadow.Nodes() {
		if x := s.core.Node(y.ID); y.Vouched && x != nil && !x.Vouched {
			return nil // one of ours unvouched by a namesake: the core must treat it as a rogue
		}
	}
	se := s.shadow.Elected()
	if y := s.shadow.Node(e.Master.ID); se.Master == nil && s.rejoined[e.Master.ID] && y != nil && !y.Vouched &&
		!s.md.servers[s.member(e.Master.ID).server].rogue && !s.md.servers[s.answered[e.Master.ID]].rogue {
		// A member whose address reached a rogue that showed the
		// identity of the honest server there now: the core saw one
		// server all along and kept what vouched for it; the shadow,
		// which left the member out while it reached the rogue, has a
		// new node to vouch for. The master is an honest server, and
		// so is the one whose answer made it master.
		return nil
	}
	if se.Master == nil && e.Master.Suspect {
		// A master whose check timed out keeps the writes until the
		// next check confirms; the two cores may disagree on who stands
		// for its server meanwhile (a copy of its identity is one more
		// address of it to the first).
		return nil
	}
	if se.Master == nil || s.member(se.Master.ID).server != s.member(e.Master.ID).server {
		without := "none"
		if se.Master != nil {
			without = se.Master.Addr
		}
		both := ""
		for _, y := range s.shadow.Nodes() {
			x := s.core.Node(y.ID)
			both += fmt.Sprintf("\n  %s without {role %s up %v suspect %v alias %v vouched %v}, with {role %s up %v suspect %v alias %v vouched %v}",
				y.Addr, y.Role, y.Up, y.Suspect, y.AliasOf != nil, y.Vouched, x.Role, x.Up, x.Suspect, x.AliasOf != nil, x.Vouched)
		}
		return fmt.Errorf("with the rogues' answers %s is master; without them %s%s", e.Master.Addr, without, both)
	}
	return nil
}

func (s *sim) check() error {
	if s.needlessCut != nil {
		return s.needlessCut
	}
	c := s.core
	e := c.Elected()
	if len(c.Nodes()) == 0 {
		return errors.New("the node set is empty")
	}
	masters := 0
	for _, x := range c.Nodes() {
		if x.Role == RoleMaster && x.AliasOf == nil {
			masters++
		}
	}
	if masters > 1 {
		return fmt.Errorf("%d masters in one view", masters)
	}
	if err := s.checkShadow(e); err != nil {
		return err
	}
	if err := s.checkStaleReasons(e); err != nil {
		return err
	}
	if e.Master != nil {
		m := e.Master
		mb := s.member(m.ID)
		srv := s.md.servers[mb.server]
		if m.Role != RoleMaster {
			return fmt.Errorf("elected %s has role %s", m.Addr, m.Role)
		}
		if !m.live() || m.Res.InRecovery || m.Res.ReadOnly {
			return fmt.Errorf("master %s was not writable at its last check", m.Addr)
		}
		if srv.rogue {
			return fmt.Errorf("master %s is a rogue server", m.Addr)
		}
		if srv.foreign {
			return fmt.Errorf("master %s is of another cluster", m.Addr)
		}
		if s.pinned != 0 && m.Res.SystemID != s.pinned {
			return fmt.Errorf("master %s has system identifier %d, pinned %d", m.Addr, m.Res.SystemID, s.pinned)
		}
		if tl := s.keptTL[m.Res.SystemID]; m.Res.Timeline < tl {
			return fmt.Errorf("master %s elected on timeline %d after timeline %d was seen on an elected master or a node the user named (which may have left the set)", m.Addr, m.Res.Timeline, tl)
		}
		if c.anchored() {
			// Without an anchor every node is believed: what a master
			// showed goes with it (TestUnanchoredRogueTimelineDoesNotOutliveIt).
			s.keptTL[m.Res.SystemID] = m.Res.Timeline
		}
		for _, x := range c.Nodes() {
			xs := s.md.servers[s.member(x.ID).server]
			if xs.rogue || xs.foreign || !x.live() || !x.Vouched || x.Res.SystemID != m.Res.SystemID {
				continue
			}
			if tl := bestTimeline(&x.Res); tl > m.Res.Timeline && !(x.Res.InRecovery && x.Res.ReceiveTimeline == 0) {
				return fmt.Errorf("master %s on timeline %d while %s shows timeline %d", m.Addr, m.Res.Timeline, x.Addr, tl)
			}
		}
	}
	// What a node the user named showed (vouched, while anchored) counts
	// after it left the set too: the next master is checked against it.
	for _, x := range c.Nodes() {
		if x.Trusted && x.live() && x.Vouched && x.Res.SystemID != 0 && x.Res.SystemID == c.Cluster() && c.anchored() &&
			!(x.Res.InRecovery && x.Res.ReceiveTimeline == 0) {
			s.keptTL[x.Res.SystemID] = max(s.keptTL[x.Res.SystemID], bestTimeline(&x.Res))
		}
	}
	if m := e.Master; m != nil {
		// Cut before publish: no connection that took writes is open to
		// another server, through another member or through the
		// master's own address before it moved.
		// The master's server is the one its checks reached (the name
		// may have moved since: the core has not seen it yet).
		for _, t := range s.txns {
			ts := s.md.servers[t.server]
			if !t.cut && t.alive(s.md) && (ts.sysid != m.Res.SystemID || t.start != m.Res.StartTime.UnixMicro()) {
				return fmt.Errorf("master %s (server %s at its check) elected while a write connection through member %d to server %s is open and not cut",
					m.Addr, m.Res.Name, t.member, ts.name)
			}
		}
	}
	// Damping never touches who is master, and ends.
	for _, x := range c.Nodes() {
		if x.Damped && x.DampedUntil.Sub(s.now) > c.cfg.FlapCooldown {
			return fmt.Errorf("%s damped until %s, past the cool-down", x.Addr, x.DampedUntil)
		}
	}
	// Replicas: only those that follow the master serve reads.
	known := e.Master != nil && !e.Master.Partial
	for _, x := range c.Nodes() {
		if !x.Role.IsReplica() || x.AliasOf != nil {
			continue
		}
		xs := s.md.servers[s.answerer(x.ID)]
		if xs.foreign {
			return fmt.Errorf("replica %s is of another cluster", x.Addr)
		}
		if xs.rogue && !s.cfg.restricted {
			return fmt.Errorf("replica %s is a rogue server (vouched %v)", x.Addr, x.Vouched)
		}
		if xs.rogue {
			continue // without pg_monitor a rogue may pass for a replica by name (docs/decision-core.md)
		}
		if !x.live() || !x.Res.InRecovery {
			return fmt.Errorf("replica %s was not in recovery at its last check", x.Addr)
		}
		if e.Master == nil && (x.Role == RoleSyncReplica || x.Role == RoleQuorumReplica) {
			// No master to say it waits for this replica.
			return fmt.Errorf("replica %s is %s with no master in the view", x.Addr, x.Role)
		}
		if !known {
			// Unknown lag is never a number: with no master there is
			// nothing to measure it against.
			if x.LagKnown {
				return fmt.Errorf("replica %s: lag %d bytes, %s, known with no master in the view", x.Addr, x.LagBytes, x.Lag)
			}
			continue
		}
		m := e.Master
		if x.Res.SystemID != m.Res.SystemID {
			return fmt.Errorf("replica %s of system %d, master of %d", x.Addr, x.Res.SystemID, m.Res.SystemID)
		}
		if x.Res.ReceiveTimeline != 0 && bestTimeline(&x.Res) != m.Res.Timeline {
			return fmt.Errorf("replica %s streams timeline %d, master on %d", x.Addr, bestTimeline(&x.Res), m.Res.Timeline)
		}
		replay := x.Res.LSN
		for _, r := range m.Res.Replicas {
			if ownRow(x, r) {
				replay = max(replay, r.ReplayLSN)
			}
		}
		if replay < m.Res.LSN && x.LagBytes == 0 && !x.LagAt.IsZero() && !x.LagAt.Before(m.ResAt) {
			return fmt.Errorf("replica %s behind the master (%s < %s) with lag 0", x.Addr, replay, m.Res.LSN)
		}
		// Sync claimed only when unambiguous; a foreign namesake changes
		// nothing.
		if x.Role == RoleSyncReplica || x.Role == RoleQuorumReplica {
			k := 0
			for _, r := range m.Res.Replicas {
				if ownRow(x, r) {
					k++
				}
			}
			if k != 1 {
				return fmt.Errorf("replica %s claimed %s with %d walsender rows of its name", x.Addr, x.Role, k)
			}
			// Its own last check, after the master's walsenders were
			// read, shows it streaming from another server of the set,
			// and it still does: the row that says the master waits for it is the
			// walsender that served it before.
			// (Only where the address still reaches that server: one
			// whose name has since moved onto the master's server, the
			// stream still from the server it reached then, is taken for
			// the master's, until the master's walsenders are read again;
			// see "Limits" in docs/decision-core.md.)
			ms := s.md.servers[s.answerer(m.ID)]
			up := -1
			for _, mb := range s.members {
				if mb.Host == x.Res.UpstreamHost && !mb.gone && mb.server == mb.home {
					up = mb.home
				}
			}
			if up >= 0 && up != ms.idx && !ms.rogue && !s.md.servers[up].rogue && s.md.servers[up].recovery && s.md.master() == ms &&
				xs.upstream == up && m.replicasBegan.Before(x.CheckBegan) {
				return fmt.Errorf("replica %s claimed %s while its check (began %s) shows it streaming from %s:%d, not the master %s (walsenders read at %s)",
					x.Addr, x.Role, x.CheckBegan.Format("15:04:05.000"), x.Res.UpstreamHost, x.Res.UpstreamPort, ms.name, m.replicasBegan.Format("15:04:05.000"))
			}
		}
		if !s.cfg.restricted && !s.cfg.roleUser && x.Vouched && x.Role == RoleReplica && x.SyncUnknown != "" && x.SyncUnknown != syncUnknownOldRows && x.SyncUnknown != syncUnknownRenamed && s.uniqueHonestName(x, m) &&
			!s.rowAtDownUnvouched(x, m) {
			return fmt.Errorf("replica %s: sync unknown (%s) though only it goes by its name among the cluster's nodes", x.Addr, x.SyncUnknown)
		}
	}
	return nil
}

// checkStaleReasons checks what the election says of stale masters, which
// the shell's error, status and pgxha watch say to the operator: each
// stale node behind a replica names another node of the set, and one
// behind no replica is on an older timeline than the election's.
func (s *sim) checkStaleReasons(e Election) error {
	if len(e.Stale) != len(e.StaleBehind) {
		return fmt.Errorf("stale %q, behind %q: not one reason per node", e.Stale, e.StaleBehind)
	}
	if len(e.StaleMoved) != len(e.Stale) {
		return fmt.Errorf("stale %q, moved %v: not one per node", e.Stale, e.StaleMoved)
	}
	for i, b := range e.StaleBehind {
		// Moved says the replica answered at an address reaching the
		// stale server itself now, and only that.
		var x, y *Node
		for _, n := range s.core.Nodes() {
			if strings.HasPrefix(e.Stale[i], n.Addr+" (") {
				x = n
			}
			if b != "" && n.Addr == b {
				y = n
			}
		}
		if x == nil || b != "" && y == nil || e.StaleMoved[i] != (y != nil && grouped(x, y)) {
			return fmt.Errorf("stale %q behind %q, moved %v: moved must say whether the replica's address reaches the stale server", e.Stale[i], b, e.StaleMoved[i])
		}
	}
	for _, x := range s.core.Nodes() {
		if x.StaleBehind == "" {
			if x.Stale && x.AliasOf == nil && len(e.Stale) > 0 && x.Res.Timeline >= e.Timeline {
				return fmt.Errorf("%s stale on timeline %d, said older than the election's %d", x.Addr, x.Res.Timeline, e.Timeline)
			}
			continue
		}
		if x.StaleBehind == x.Addr && x.Stale && x.AliasOf != nil && x.AliasOf.StaleBehind == x.Addr {
			continue // its server proved behind by the replica that answered at its address before a name moved onto the server
		}
		if !x.Stale || x.StaleBehind == x.Addr || !slices.ContainsFunc(s.core.Nodes(), func(y *Node) bool { return y.Addr == x.StaleBehind }) {
			return fmt.Errorf("%s (stale %v) said behind %s: not a stale node behind another of the set", x.Addr, x.Stale, x.StaleBehind)
		}
	}
	return nil
}

// ownRow reports whether walsender row r may be x's: by the name x goes by,
// or from x's address under its server's name (a name the source gave
// that is behind; see opNameMember).
func ownRow(x *Node, r checker.Replica) bool {
	return r.ApplicationName == x.rowName() && couldBeRow(x, r) || r.ClientAddr != "" && r.ClientAddr == x.clientIP() && r.ApplicationName == x.Res.Name
}

// uniqueHonestName reports whether x's name is on one row of m's
// walsenders and no other live replica of the cluster goes by it.
func (s *sim) uniqueHonestName(x, m *Node) bool {
	k := 0
	for _, r := range m.Res.Replicas {
		if r.ApplicationName == x.rowName() {
			k++
		}
	}
	if k != 1 {
		return false
	}
	for _, y := range s.core.Nodes() {
		ys := s.md.servers[s.member(y.ID).server]
		if y != x && y.AliasOf != x && x.AliasOf != y && !ys.foreign && !ys.rogue && y.live() && y.Res.InRecovery && y.rowName() == x.rowName() {
			return false
		}
	}
	return true
}

// converged checks that, faults over, the view is the truth: the master
// is the model's, every server that streams from it is a replica, and no
// acknowledged write is lost.
func (s *sim) converged() error {
	truth := s.md.master()
	if truth == nil {
		return errors.New("model: no master after the repair")
	}
	e := s.core.Elected()
	trusted := false
	for _, mb := range s.members {
		trusted = trusted || mb.server == truth.idx && mb.Trusted && !mb.gone
	}
	hidden := s.cfg.restricted || s.cfg.roleUser
	if e.Master == nil && hidden && !trusted {
		// Nothing can vouch for a master the user did not name when the
		// check user may not see the replicas' walreceivers: no master
		// is the safe outcome (README: what is trusted).
		return s.noLoss(nil)
	}
	if e.Master == nil && hidden && s.provenAgainstAnother(truth) {
		// A check user without pg_monitor cannot see whom the replica
		// follows: a proof made against a server that has left the
		// master's address holds against the master there now, until the
		// operator lifts it (docs/decision-core.md). Lifted, the master
		// is the model's.
		s.tracef("operator: ForgetTimeline (a proof against a server that left %s)", truth.name)
		s.core.ForgetTimeline(s.now)
		clear(s.keptTL)
		e = s.core.Elected()
	}
	if e.Master == nil {
		return fmt.Errorf("no master in the view after the faults ended; the model's is %s (elected: %+v)", truth.name, e)
	}
	if srv := s.md.servers[s.member(e.Master.ID).server]; srv != truth {
		return fmt.Errorf("the view's master is %s, the model's %s", srv.name, truth.name)
	}
	if s.core.fast || e.Master.Suspect {
		return fmt.Errorf("checks still fast after the repair (master %s suspect %v)", e.Master.Addr, e.Master.Suspect)
	}
	for _, x := range s.core.Nodes() {
		if x.Waiting != "" && x != e.Master && s.md.servers[s.member(x.ID).server] == truth {
			return fmt.Errorf("%s, an address of the master's server, still waiting after the repair: %s", x.Addr, x.Waiting)
		}
	}
	for _, x := range s.core.Nodes() {
		srv := s.md.servers[s.member(x.ID).server]
		if x.AliasOf != nil || srv == truth || !srv.recovery || !canStream(srv, s.md.servers[srv.upstream]) {
			continue
		}
		if !x.Role.IsReplica() {
			return fmt.Errorf("%s (%s) streams from the master but is %s (%s)", x.Addr, srv.name, x.Role, x.Detached)
		}
		if x.SyncUnknown == syncUnknownOldRows || x.SyncUnknown == syncUnknownRenamed {
			return fmt.Errorf("%s (%s): sync unknown (%s) after the master's walsenders were read again", x.Addr, srv.name, x.SyncUnknown)
		}
	}
	return s.noLoss(truth)
}

// noLoss checks that every acknowledged write not lost by PostgreSQL itself
// is in the history of the model's master.
// provenAgainstAnother reports whether a node where truth answers is
// stale by a replica's proof made against another server at that node.
func (s *sim) provenAgainstAnother(truth *server) bool {
	for _, x := range s.core.Nodes() {
		if !x.Stale || x.StaleBehind == "" || s.member(x.ID).server != truth.idx {
			continue
		}
		for _, y := range s.core.Nodes() {
			for _, b := range y.ahead {
				if b.id == x.ID && b.server != x.Res.Server() {
					return true
				}
			}
		}
	}
	return false
}

func (s *sim) noLoss(truth *server) error {
	if truth == nil {
		truth = s.md.master()
	}
	for _, w := range s.md.writes {
		if w.acked && w.exempt == "" && !truth.has(w.branch, w.lsn) {
			return fmt.Errorf("acknowledged write %d (on %s, branch %d at %s) is not in the master's history",
				w.id, s.md.servers[w.server].name, w.branch, w.lsn)
		}
	}
	return nil
}

// failure is a schedule that broke an invariant.
type failure struct {
	seed int64
	cfg  simConfig
	ops  []op
	err  error
	tail []string
}

func (f *failure) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d (%s): %v\nschedule (%d ops): %v\nlast events:\n", f.seed, f.cfg, f.err, len(f.ops), f.ops)
	for _, l := range f.tail {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

// play runs one schedule.
func play(seed int64, cfg simConfig, ops []op) (*sim, error) {
	s := newSim(cfg, seed, nil)
	return s, s.run(ops)
}

// shrink removes operations from a failing schedule while it still fails
// (with any invariant), a bounded number of times.
func shrink(f *failure) *failure {
	best := f
	for round := 0; round < 8; round++ {
		improved := false
		for i := 0; i < len(best.ops); i++ {
			ops := slices.Delete(slices.Clone(best.ops), i, i+1)
			s, err := play(best.seed, best.cfg, ops)
			if err != nil {
				best = &failure{seed: best.seed, cfg: best.cfg, ops: ops, err: err, tail: tail(s.trace, 40)}
				improved = true
				i--
			}
		}
		// Fewer steps, too.
		for best.cfg.steps > 50 {
			cfg := best.cfg
			cfg.steps = cfg.steps * 2 / 3
			var ops []op
			for _, o := range best.ops {
				if o.at < cfg.steps {
					ops = append(ops, o)
				}
			}
			s, err := play(best.seed, cfg, ops)
			if err == nil {
				break
			}
			best = &failure{seed: best.seed, cfg: cfg, ops: ops, err: err, tail: tail(s.trace, 40)}
			improved = true
		}
		if !improved {
			break
		}
	}
	return best
}

func tail(l []string, n int) []string {
	if len(l) > n {
		return l[len(l)-n:]
	}
	return l
}

// rowAtDownUnvouched reports whether the master's row by x's name comes
// from the address of a member nothing vouches for whose checks fail: the
// core cannot tell that member from x's server (see doubtfulRow), and x's
// sync state is unknown until that member answers or leaves.
func (s *sim) rowAtDownUnvouched(x, m *Node) bool {
	a := doubtfulRow(x, m.Res.Replicas, s.core.nodes)
	if a == "" {
		return false
	}
	for _, y := range s.core.nodes {
		if !y.Vouched && !y.live() && (y.Host == a || y.RemoteIP == a) {
			return true
		}
	}
	return false
}
