package topology

import (
	"fmt"
	"math/rand"
	"slices"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// The model of PostgreSQL streaming replication the simulation drives the
// core with. A server has a system identifier, a postmaster start time, a
// WAL history of branches (a promotion starts a branch on a new timeline at
// its fork point), a WAL position (insert on a master; received and
// replayed on a replica), an upstream it streams from, and the standbys
// its synchronous_standby_names waits for (FIRST k or ANY k). A write is
// acknowledged only as PostgreSQL would: once enough of those standbys have
// flushed it.

// branch is a stretch of WAL on one timeline: from start to end (end 0
// while it is the server's current one).
type branch struct {
	id    int // unique across the model: two promotions to one timeline number are two branches
	tl    uint32
	start checker.LSN
}

type server struct {
	idx   int
	sysid uint64
	start int64 // postmaster start time, unix microseconds, by its host's clock
	clock int64 // how far its host's clock is off the model's, microseconds
	name  string
	down  bool // crashed or stopped: connections refused
	hung  bool // frozen or partitioned: checks time out
	// linger is how many more steps the replication connections of a hung
	// server outlive its hang (wal_sender_timeout, wal_receiver_timeout):
	// its upstream's walsender row for it, and its downstreams'
	// walreceivers, still show it streaming, at the positions it had.
	linger  int
	rogue   bool // lies about everything
	foreign bool // another cluster

	recovery bool
	readOnly bool
	// hist is the server's WAL history: hist[i] runs from hist[i].start to
	// hist[i+1].start; the last is the current one.
	hist []branch
	lsn  checker.LSN // master: insert; replica: replayed
	recv checker.LSN // replica: received (flushed)
	// padFrom, padTo: a master's WAL switch whose padding is not written
	// yet (padTo 0: none): its write position is padFrom, the switch
	// record's end, its insert position padTo, the segment's end, for
	// padSteps more steps or until a commit flushes.
	padFrom, padTo checker.LSN
	padSteps       int
	// jumpFrom, jumpTo: the switch record whose replay took a replica's
	// replay position to the segment's end (see holds).
	jumpFrom, jumpTo checker.LSN
	upstream         int // the server it streams from, -1 none
	// files is the newest timeline whose history file is in its pg_wal:
	// its own, and those its walreceiver fetched from an upstream on
	// connecting, whether or not it could follow them.
	files  uint32
	paused bool // replay paused
	// Sync: the names its synchronous_standby_names lists, and how many
	// must confirm (FIRST k when first, else ANY k).
	syncNames []string
	syncK     int
	first     bool
}

func (s *server) tl() uint32 { return s.hist[len(s.hist)-1].tl }

// holds is how far s holds WAL: what it replayed or received, where a
// replay position at the end of a segment reached by replaying a switch
// record counts as the record's end (the padding is not WAL it holds).
func (s *server) holds() checker.LSN {
	if s.jumpTo != 0 && s.lsn == s.jumpTo && s.recv < s.jumpTo {
		return max(s.recv, s.jumpFrom)
	}
	return max(s.lsn, s.recv)
}

// has reports whether the server's history holds WAL position at of
// branch b.
func (s *server) has(b int, at checker.LSN) bool {
	for i, h := range s.hist {
		if h.id != b {
			continue
		}
		end := s.lsn
		if s.recovery {
			end = max(s.lsn, s.recv)
		}
		if i+1 < len(s.hist) {
			end = s.hist[i+1].start
		}
		return at <= end
	}
	return false
}

// canStream reports whether r can stream from u: same cluster, and r's
// history is a prefix of u's (r is not past a fork u took).
func canStream(r, u *server) bool {
	if r.sysid != u.sysid || u.down || u.hung || r.down || r.hung {
		return false
	}
	pos := r.holds()
	cur := r.hist[len(r.hist)-1]
	return u.has(cur.id, pos)
}

// connected reports whether r's walreceiver shows a connection to u and u's
// walsender a row for r: r streams from u, or did when one of them hung
// and the connection outlives the hang (see server.linger). A server that
// hung receives and replays nothing meanwhile.
func connected(r, u *server) bool {
	if canStream(r, u) {
		return true
	}
	if r.hung == u.hung || r.hung && r.linger == 0 || u.hung && u.linger == 0 {
		return false
	}
	rh, uh := r.hung, u.hung
	r.hung, u.hung = false, false
	ok := canStream(r, u)
	r.hung, u.hung = rh, uh
	return ok
}

// write is one acknowledged or pending write.
type write struct {
	id     int
	server int
	branch int
	lsn    checker.LSN
	acked  bool
	exempt string // why losing it is PostgreSQL's doing, not the router's
}

type model struct {
	rng       *rand.Rand
	servers   []*server
	switches  []walSwitch // every WAL switch of every branch (see switchWAL)
	nextBr    int
	nextStart int64
	// skew draws the hosts' clocks (nil: every host keeps the model's
	// clock); used holds the start times given out, which stay unique.
	skew       *rand.Rand
	used       map[int64]bool
	writes     []*write
	restricted bool // the check user lacks pg_monitor
	// roleUser: the check user is the replication role itself, without
	// pg_read_all_stats: the walsenders show their names and client
	// addresses (pg_stat_activity shows a role its own backends) but no
	// state, sync state or position; a replica's walreceiver shows its pid
	// alone (ReceiverHidden), and pg_wal may not be listed.
	roleUser bool
	// stranger: a standby outside the node set (pg_receivewal
	// --synchronous, say) streams from the master under the name
	// synchronous_standby_names lists first: under FIRST k it takes one of
	// the k sync places, and no check of a node of the set shows it came
	// or went. It streams from the master in truth, whichever that is.
	stranger bool
	// strangerListed: synchronous_standby_names lists the stranger first
	// (the schedules of TestTruthStaleness).
	strangerListed bool
	// strangerHost, when > 0, is the server on whose machine the stranger
	// runs (a backup's pg_receivewal beside a standby): its row shows that
	// server's address. 0: a machine of its own.
	strangerHost int
	// addrOf is the address a replica's primary_conninfo names for a
	// server: the host and port of its first member.
	addrOf func(server int) (string, uint16)
}

// newModel makes a cluster of a master and its replicas. skew, when not
// nil, gives each host a clock of its own (see clockSkew); it is a source
// apart from rng so that the schedules a seed draws do not depend on it.
func newModel(rng *rand.Rand, skew *rand.Rand, replicas int, syncK int, any bool) *model {
	md := &model{rng: rng, skew: skew, nextBr: 1, nextStart: 1_000_000, used: map[int64]bool{}}
	sysid := uint64(7000000000000000001)
	for i := 0; i <= replicas; i++ {
		s := &server{idx: i, sysid: sysid, clock: md.hostClock(), name: fmt.Sprintf("n%d", i+1),
			hist: []branch{{id: 1, tl: 1}}, lsn: 1000, upstream: 0, recovery: i > 0, readOnly: i > 0}
		s.start = md.startTime(s.clock)
		if i == 0 {
			s.upstream = -1
		} else {
			s.recv = 1000
		}
		md.servers = append(md.servers, s)
	}
	md.nextBr = 2
	md.setSync(md.servers[0], syncK, !any)
	return md
}

// clockSkew bounds how far a host's clock is off the model's either way:
// fifty times the model's time between two starts, so a server that
// restarts on a host whose clock lags the last one's (shared storage, a
// rescheduled volume) reads an earlier start time than its run before,
// and a server that started later may read an earlier one.
const clockSkew = 100_000

// hostClock draws a host's clock: how far it is off the model's.
func (md *model) hostClock() int64 {
	if md.skew == nil {
		return 0
	}
	return md.skew.Int63n(2*clockSkew+1) - clockSkew
}

// startTime is the postmaster start time a server starting now on a host
// with the given clock reads: unique across the model.
func (md *model) startTime(clock int64) int64 {
	md.nextStart += 1000 + int64(md.rng.Intn(1000))
	t := md.nextStart + clock
	for md.used[t] {
		t++
	}
	md.used[t] = true
	return t
}

// restart gives s the start time of a postmaster starting now: now and
// then on another host, with another clock.
// walSegment is the model's WAL segment size (PostgreSQL's default).
const walSegment = 16 << 20

// switchWAL makes m, a master, switch to a new WAL segment: a switch
// record, then padding to the segment's end, which m writes a little
// later. A replica that replays the record reports the segment's end as
// its replay position at once (PostgreSQL's WAL reader takes a switch
// record to extend to it), past m's write position until the padding is
// written.
func (md *model) switchWAL(m *server) {
	from := m.lsn + 24
	to := (from + walSegment - 1) / walSegment * walSegment
	if from == to {
		return
	}
	m.lsn, m.padFrom, m.padTo, m.padSteps = to, from, to, 1+md.rng.Intn(12)
	md.switches = append(md.switches, walSwitch{branch: m.hist[len(m.hist)-1].id, from: from, to: to})
}

// written is how far s has written its WAL: what a walsender sends, what
// pg_current_wal_lsn() reports on a master.
func (s *server) written() checker.LSN {
	if s.padTo != 0 {
		return s.padFrom
	}
	return s.lsn
}

// walSwitch is a switch record of branch: from its end to the segment's.
type walSwitch struct {
	branch   int
	from, to checker.LSN
}

// switchPast returns the switch record of a branch of s's history that
// WAL up to lsn ends with: the segment's padding is still to come.
func (md *model) switchPast(s *server, lsn checker.LSN) (walSwitch, bool) {
	for _, w := range md.switches {
		if lsn >= w.from && lsn < w.to && s.has(w.branch, w.from) {
			return w, true
		}
	}
	return walSwitch{}, false
}

// replayTo sets s's replay position to lsn, or, when that ends with a
// switch record, to the segment's end, as PostgreSQL's WAL reader does.
func (md *model) replayTo(s *server, lsn checker.LSN) {
	if w, ok := md.switchPast(s, lsn); ok {
		s.lsn, s.jumpFrom, s.jumpTo = w.to, w.from, w.to
		return
	}
	s.lsn = lsn
}

func (md *model) restart(s *server) {
	s.padTo = 0 // recovery ends at the segment's end: the padding is not WAL to write
	if md.skew != nil && md.skew.Intn(3) == 0 {
		s.clock = md.hostClock()
	}
	s.start = md.startTime(s.clock)
}

// setSync makes m's synchronous_standby_names list the replicas that
// stream from it, k of which must confirm.
func (md *model) setSync(m *server, k int, first bool) {
	m.syncNames, m.syncK, m.first = nil, 0, first
	if k == 0 {
		return
	}
	if md.strangerListed {
		m.syncNames = append(m.syncNames, strangerName)
	}
	for _, s := range md.servers {
		if s != m && !s.foreign && !s.rogue && s.upstream == m.idx {
			m.syncNames = append(m.syncNames, s.name)
		}
	}
	ours := len(m.syncNames)
	if md.strangerListed {
		ours--
	}
	m.syncK = min(k, ours)
}

// syncStandbys returns the standbys m waits for now, and what sync_state
// each shows.
func (md *model) syncState(m *server, r *server) string {
	if !slices.Contains(m.syncNames, r.name) {
		return "async"
	}
	if !m.first {
		return "quorum"
	}
	// FIRST k: the first k listed that stream are sync, the rest potential.
	k := 0
	for _, n := range m.syncNames {
		if n == strangerName && md.stranger && md.master() == m {
			k++ // it streams from m, listed first
			continue
		}
		for _, s := range md.servers {
			if s.name == n && s.upstream == m.idx && connected(s, m) {
				if s == r {
					if k < m.syncK {
						return "sync"
					}
					return "potential"
				}
				k++
			}
		}
	}
	return "potential"
}

// confirmed reports whether a write at lsn on m is acknowledged: enough of
// its synchronous standbys that stream from it have flushed it.
func (md *model) confirmed(m *server, lsn checker.LSN) bool {
	if m.syncK == 0 {
		return true
	}
	k := 0
	for _, s := range md.servers {
		if s.upstream == m.idx && !s.down && !s.hung && slices.Contains(m.syncNames, s.name) &&
			canStream(s, m) && s.recv >= lsn && s.hist[len(s.hist)-1].id == m.hist[len(m.hist)-1].id {
			k++
		}
	}
	return k >= m.syncK
}

// replicate moves WAL along: each replica that can stream from its
// upstream takes its history and part of what it lacks, and replays part
// of what it received unless replay is paused.
func (md *model) replicate() {
	for _, s := range md.servers {
		if s.hung && s.linger > 0 {
			s.linger--
		}
	}
	for _, s := range md.servers {
		if !s.recovery || s.upstream < 0 || s.rogue {
			continue
		}
		u := md.servers[s.upstream]
		if u.sysid == s.sysid && !u.down && !u.hung && !s.down && !s.hung && !u.rogue && u.tl() >= s.tl() {
			// The walreceiver fetches the history files of the
			// timelines up to the upstream's own before it asks for
			// WAL, even of one it cannot follow (it forked off before
			// this replica's position); none of an upstream on an older
			// timeline (walreceiver.c, WalRcvFetchTimeLineHistoryFiles).
			s.files = max(s.files, u.tl())
		}
		if !canStream(s, u) {
			continue
		}
		top := u.written()
		if u.recovery {
			top = u.recv
		}
		if s.recv < top {
			if u.padTo != 0 && md.rng.Intn(2) == 0 {
				s.recv = top // the switch record, as the walsender sends whole records
			} else {
				s.recv += checker.LSN(md.rng.Int63n(int64(top-s.recv) + 1))
			}
		}
		// Take the upstream's history up to what was received: a
		// timeline switch is learned at its switch point.
		s.hist = histUpTo(u.hist, s.recv)
		if !s.paused && s.lsn < s.recv {
			if _, ok := md.switchPast(s, s.recv); ok && md.rng.Intn(2) == 0 {
				md.replayTo(s, s.recv) // replayed all it received, a switch record last
			} else {
				md.replayTo(s, s.lsn+checker.LSN(md.rng.Int63n(int64(s.recv-s.lsn)+1)))
			}
		}
	}
	for _, s := range md.servers {
		if s.padTo != 0 {
			if s.padSteps--; s.padSteps <= 0 {
				s.padTo = 0
			}
		}
	}
}

// histUpTo is the part of history h that a server at position pos has:
// the branches that start at or before it.
func histUpTo(h []branch, pos checker.LSN) []branch {
	k := 1
	for k < len(h) && h[k].start <= pos {
		k++
	}
	return slices.Clone(h[:k])
}

// promote makes s a master on a new timeline (the newest whose history
// file is in its pg_wal, plus one: two servers promoted apart may pick the
// same number).
func (md *model) promote(s *server) {
	md.replayTo(s, max(s.lsn, s.recv))
	s.recv = 0
	tl := max(s.tl(), s.files) + 1
	s.files = tl
	s.hist = append(slices.Clone(s.hist), branch{id: md.nextBr, tl: tl, start: s.lsn})
	md.nextBr++
	s.recovery, s.readOnly, s.upstream, s.paused = false, false, -1, false
}

// demote makes s a replica of u (rewound and restarted if it has WAL u
// lacks: its history becomes u's up to u's position).
func (md *model) demote(s, u *server) {
	s.padTo = 0
	s.recovery, s.readOnly, s.upstream = true, true, u.idx
	s.syncNames, s.syncK = nil, 0
	if !canStream(s, u) {
		// pg_rewind, or a fresh copy: back to where u's history has it.
		s.lsn = min(s.lsn, u.written())
		if u.recovery {
			s.lsn = min(s.lsn, u.recv)
		}
		s.hist = histUpTo(u.hist, s.lsn)
		s.files = u.files // pg_rewind takes the source's pg_wal, a copy has it
		md.restart(s)
	}
	// It streams from where it replayed (what it received past that is
	// dropped); at the end of a segment reached by replaying a switch
	// record, from the record's end.
	s.recv = s.lsn
	if s.jumpTo != 0 && s.lsn == s.jumpTo {
		s.recv = s.jumpFrom
	}
}

// observe is what a check of s returns, as the PostgreSQL checker would
// read it, at now.
func (md *model) observe(s *server, now time.Time) checker.Result {
	if s.rogue {
		return md.lie(s, now)
	}
	r := checker.Result{
		InRecovery: s.recovery, ReadOnly: s.readOnly, Timeline: s.tl(), SystemID: s.sysid,
		StartTime: time.UnixMicro(s.start), ServerTime: now, Name: s.name, ReplayPaused: s.paused && s.recovery,
	}
	if s.recovery {
		r.LSN, r.ReceiveLSN = s.lsn, s.recv
		if s.start%2 == 0 {
			// The checker reads the segment size; half the servers leave
			// it unknown, as a checker of another kind may.
			r.WalSegmentSize = walSegment
		}
		r.ReplayTime = now.Add(-time.Duration(md.rng.Intn(2000)) * time.Millisecond)
		streaming := s.upstream >= 0 && connected(s, md.servers[s.upstream])
		if streaming && !md.restricted && !md.roleUser {
			r.ReceiveTimeline = s.tl()
			if md.addrOf != nil {
				r.UpstreamHost, r.UpstreamPort = md.addrOf(s.upstream)
			}
		} else if streaming {
			r.ReceiverHidden = true
		} else if !md.restricted && !md.roleUser {
			// No walreceiver: the newest history file in its pg_wal,
			// its own timeline's or one fetched from an upstream it
			// could not follow (pg_monitor lists them).
			r.HistoryTimeline = max(s.tl(), s.files)
		}
	} else {
		r.LSN = s.written()
	}
	for _, x := range md.servers {
		if x == s || x.upstream != s.idx || !x.recovery || !connected(x, s) || x.rogue {
			continue
		}
		row := checker.Replica{ApplicationName: x.name, State: "streaming", SentLSN: x.recv, FlushLSN: x.recv, ReplayLSN: x.lsn}
		if md.addrOf != nil {
			row.ClientAddr, _ = md.addrOf(x.idx)
		}
		if !s.recovery {
			row.SyncState = md.syncState(s, x)
		} else {
			row.SyncState = "async"
		}
		if md.restricted {
			row = checker.Replica{ApplicationName: x.name}
		}
		if md.roleUser {
			row = checker.Replica{ApplicationName: x.name, ClientAddr: row.ClientAddr}
		}
		r.Replicas = append(r.Replicas, row)
	}
	if md.stranger && !s.recovery && md.master() == s {
		row := checker.Replica{ApplicationName: strangerName, ClientAddr: "192.0.2.99", State: "streaming",
			SentLSN: s.lsn, FlushLSN: s.lsn, ReplayLSN: s.lsn, SyncState: "async"}
		if md.strangerHost > 0 && md.addrOf != nil {
			row.ClientAddr, _ = md.addrOf(md.strangerHost)
		}
		if slices.Contains(s.syncNames, strangerName) && s.syncK > 0 {
			row.SyncState = "quorum"
			if s.first {
				row.SyncState = "sync"
			}
		}
		if md.restricted {
			row = checker.Replica{ApplicationName: strangerName}
		}
		if md.roleUser {
			row = checker.Replica{ApplicationName: strangerName, ClientAddr: row.ClientAddr}
		}
		r.Replicas = append(r.Replicas, row)
	}
	return r
}

// strangerName is the stranger's application_name (see model.stranger).
const strangerName = "rw"

// lie is what a rogue server says: any field, in any combination, often
// copying the cluster's identifier and names.
func (md *model) lie(s *server, now time.Time) checker.Result {
	rng := md.rng
	if rng.Intn(3) == 0 {
		return md.copyOf(s, now)
	}
	r := checker.Result{
		InRecovery: rng.Intn(2) == 0, ReadOnly: rng.Intn(4) == 0, Timeline: uint32(1 + rng.Intn(6)),
		LSN: checker.LSN(rng.Int63n(1 << 20)), SystemID: md.servers[0].sysid, ServerTime: now,
		StartTime: time.UnixMicro(s.start), Name: s.name,
	}
	if rng.Intn(3) == 0 {
		r.SystemID = uint64(rng.Int63())
	}
	if rng.Intn(3) == 0 {
		r.Name = md.servers[rng.Intn(len(md.servers))].name
	}
	if rng.Intn(4) == 0 {
		// Another server's identity: one server under two addresses?
		o := md.servers[rng.Intn(len(md.servers))]
		r.StartTime = time.UnixMicro(o.start)
	}
	if r.InRecovery {
		r.ReceiveLSN = r.LSN + checker.LSN(rng.Intn(1000))
		if rng.Intn(2) == 0 {
			r.ReceiveTimeline = r.Timeline
		}
	}
	for _, x := range md.servers {
		if x != s && rng.Intn(2) == 0 {
			states := []string{"sync", "async", "quorum", "potential", ""}
			r.Replicas = append(r.Replicas, checker.Replica{ApplicationName: x.name, SyncState: states[rng.Intn(len(states))],
				ReplayLSN: checker.LSN(rng.Int63n(1 << 20)), State: "streaming"})
		}
	}
	return r
}

// copyOf is a rogue's answer that copies one of our servers' (the master's
// most often: its system identifier, start time and name are plain SQL to
// read), as it is or with one field changed: a restart (another start
// time), no system identifier, a promotion (the next timeline), the other
// side of recovery.
func (md *model) copyOf(s *server, now time.Time) checker.Result {
	rng := md.rng
	var honest []*server
	for _, x := range md.servers {
		if !x.rogue && !x.foreign {
			honest = append(honest, x)
		}
	}
	o := md.master()
	if o == nil || rng.Intn(3) == 0 {
		o = honest[rng.Intn(len(honest))]
	}
	r := md.observe(o, now)
	switch rng.Intn(6) {
	case 1:
		r.StartTime = time.UnixMicro(md.startTime(md.hostClock()))
	case 2:
		r.SystemID = 0
	case 3:
		r.Timeline++
		r.InRecovery, r.ReadOnly, r.ReceiveTimeline = false, false, 0
	case 4:
		r.InRecovery, r.ReadOnly = !r.InRecovery, !r.InRecovery
	}
	return r
}

// master returns the server that is master in truth: the one writable,
// reachable server of the cluster on the newest branch, or nil.
func (md *model) master() *server {
	var m *server
	for _, s := range md.servers {
		if s.rogue || s.foreign || s.down || s.recovery || s.readOnly {
			continue
		}
		if m != nil {
			return nil
		}
		m = s
	}
	return m
}

// inHistory reports whether write w is in s's history.
func (md *model) inHistory(w *write, s *server) bool {
	return s.has(w.branch, w.lsn)
}
