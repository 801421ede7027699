package topology

// Attacks found by a review of the decision core, kept as regression tests:
// each failed on the core as it was then.

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// Shared fixtures of the attacks: a cluster 42 with a trusted master M
// (10.0.0.1) on timeline 1 and a trusted sync replica r1 (10.0.0.2).

var atkT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func atkAt(ms int) time.Time { return atkT0.Add(time.Duration(ms) * time.Millisecond) }

const (
	atkM  ID = 0
	atkR1 ID = 1
	atkX  ID = 2 // not trusted (a discoverer's node)
)

func atkMaster(rows ...checker.Replica) checker.Result {
	return checker.Result{Timeline: 1, LSN: 1000, SystemID: 42, StartTime: atkT0.Add(-time.Hour), Replicas: rows}
}

func atkReplica(name string, start time.Time) checker.Result {
	return checker.Result{InRecovery: true, ReadOnly: true, Timeline: 1, ReceiveTimeline: 1, LSN: 900, ReceiveLSN: 900,
		Name: name, SystemID: 42, StartTime: start, UpstreamHost: "10.0.0.1", UpstreamPort: 5432}
}

var atkR1Start = atkT0.Add(-2 * time.Hour)

func atkRow(name, addr, sync string) checker.Replica {
	return checker.Replica{ApplicationName: name, ClientAddr: addr, State: "streaming", SyncState: sync, ReplayLSN: 900}
}

func atkMembers(rogueFirst bool) []Member {
	m := []Member{
		{ID: atkM, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: atkR1, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
		{ID: atkX, Addr: "10.0.0.9:5432", Host: "10.0.0.9"},
	}
	if rogueFirst {
		m = []Member{m[2], m[0], m[1]}
	}
	return m
}

func atkCluster(t *testing.T, rogueFirst bool) *Core {
	t.Helper()
	c := New(Config{})
	c.SetMembers(atkAt(0), atkMembers(rogueFirst))
	c.CheckOK(atkR1, atkReplica("r1", atkR1Start), atkAt(1), atkAt(2), "10.0.0.2")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(3), atkAt(4), "10.0.0.1")
	c.CheckOK(atkR1, atkReplica("r1", atkR1Start), atkAt(5), atkAt(6), "10.0.0.2")
	c.TakeReady()
	if e := c.Elected(); e.Master == nil || e.Master.ID != atkM {
		t.Fatalf("setup: master %v", e.Master)
	}
	if r := c.Node(atkR1).Role; r != RoleSyncReplica {
		t.Fatalf("setup: r1 is %v", r)
	}
	return c
}

// A server nothing vouches for takes the name of a replica that is up and
// claims to stream timeline 1 of cluster 42: it must not serve reads.
func TestAttackRogueNamesakeOfLiveReplicaServesReads(t *testing.T) {
	c := atkCluster(t, false)
	rogue := atkReplica("r1", atkT0.Add(-3*time.Hour))
	c.CheckOK(atkX, rogue, atkAt(10), atkAt(11), "10.0.0.9")
	x := c.Node(atkX)
	t.Logf("rogue: role %v vouched %v detached %q syncUnknown %q", x.Role, x.Vouched, x.Detached, x.SyncUnknown)
	if x.Role.IsReplica() {
		t.Errorf("a rogue nothing vouches for (listed from 10.0.0.2, not from its address 10.0.0.9) serves reads as %v", x.Role)
	}
	// The master's walsenders still list r1 once, from r1's address.
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(12), atkAt(13), "10.0.0.1")
	x = c.Node(atkX)
	if x.Role.IsReplica() {
		t.Errorf("after the master's next check, the rogue still serves reads as %v", x.Role)
	}
}

// The same while the real r1 is down: the rogue gets r1's sync row.
func TestAttackRogueNamesakeOfDownReplicaIsSync(t *testing.T) {
	c := atkCluster(t, false)
	c.CheckFailed(atkR1, errors.New("connection refused"), false, atkAt(8))
	rogue := atkReplica("r1", atkT0.Add(-3*time.Hour))
	c.CheckOK(atkX, rogue, atkAt(10), atkAt(11), "10.0.0.9")
	// The master still lists r1 (its walsender has not noticed yet).
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(12), atkAt(13), "10.0.0.1")
	x := c.Node(atkX)
	t.Logf("rogue: role %v vouched %v detached %q", x.Role, x.Vouched, x.Detached)
	if x.Role.IsReplica() {
		t.Errorf("a rogue nothing vouches for serves reads as %v (sync state %q)", x.Role, x.SyncState)
	}
}

// A server nothing vouches for reports r1's system identifier and
// postmaster start time: it is taken for another address of r1.
func TestAttackRogueCopiesReplicaServerID(t *testing.T) {
	c := atkCluster(t, false)
	rogue := atkReplica("whatever", atkR1Start) // r1's ServerID
	rogue.UpstreamHost = "10.0.0.66"
	rogue.Timeline, rogue.ReceiveTimeline = 1, 1
	c.CheckOK(atkX, rogue, atkAt(10), atkAt(11), "10.0.0.9")
	x := c.Node(atkX)
	t.Logf("rogue: role %v alias of %v vouched %v", x.Role, x.AliasOf != nil, x.Vouched)
	if x.Role.IsReplica() {
		t.Errorf("a rogue that copies r1's system identifier and start time serves reads as %v", x.Role)
	}
}

// The same, with the rogue before r1 in the set's order: r1 becomes the
// rogue's alias, and the rogue stands for the server.
func TestAttackRogueFirstCopiesReplicaServerID(t *testing.T) {
	c := atkCluster(t, true)
	rogue := atkReplica("r1", atkR1Start)
	c.CheckOK(atkX, rogue, atkAt(10), atkAt(11), "10.0.0.9")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(12), atkAt(13), "10.0.0.1")
	x, r1 := c.Node(atkX), c.Node(atkR1)
	t.Logf("rogue: role %v aliasOf %v; r1: role %v aliasOf %v", x.Role, x.AliasOf != nil, r1.Role, r1.AliasOf != nil)
	if x.Role.IsReplica() {
		t.Errorf("a rogue that copies r1's identity serves reads as %v (sync %q)", x.Role, x.SyncState)
	}
}

// A rogue placed before the master in the set's order reports the
// master's system identifier and start time, writable: the master is
// made its alias and writes are refused while the rogue stays.
func TestAttackRogueFirstCopiesMasterServerID(t *testing.T) {
	c := atkCluster(t, true)
	rogue := atkMaster()
	c.CheckOK(atkX, rogue, atkAt(10), atkAt(11), "10.0.0.9")
	e := c.Elected()
	x, m := c.Node(atkX), c.Node(atkM)
	t.Logf("master elected %v; rogue role %v vouched %v; M role %v aliasOf-rogue %v", e.Master != nil, x.Role, x.Vouched, m.Role, m.AliasOf == x)
	if e.Master == nil || e.Master.ID != atkM {
		t.Errorf("the trusted master lost writes to a rogue that copied its identity: elected %v", e.Master)
	}
}

// One server under two trusted addresses: r1 (10.0.0.2) and its second
// address A (a DNS name or a virtual address, here 10.0.0.3), checked
// first. A is measured as a replica, then made r1's alias once r1 answers;
// its own lag is never measured again, yet it is reported (and routed by)
// with the role of r1 and the lag it had before.
func TestAttackAliasKeepsFrozenLag(t *testing.T) {
	c := New(Config{})
	const a ID = 3
	c.SetMembers(atkAt(0), []Member{
		{ID: atkM, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: atkR1, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
		{ID: a, Addr: "10.0.0.3:5432", Host: "10.0.0.3", Trusted: true},
	})
	// A answers first, caught up; r1's check is slow.
	caughtUp := atkReplica("r1", atkR1Start)
	caughtUp.LSN, caughtUp.ReceiveLSN = 1000, 1000
	c.CheckOK(a, caughtUp, atkAt(1), atkAt(2), "10.0.0.3")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(3), atkAt(4), "10.0.0.1")
	c.CheckOK(a, caughtUp, atkAt(5), atkAt(6), "10.0.0.3")
	ax := c.Node(a)
	t.Logf("A before r1 answers: role %v lag %d known %v", ax.Role, ax.LagBytes, ax.LagKnown)
	c.CheckOK(atkR1, atkReplica("r1", atkR1Start), atkAt(1), atkAt(7), "10.0.0.2")
	// The replica falls far behind (replay paused, say): the master is at
	// 10 MB, r1 replayed 900.
	for i := range 5 {
		ms := 100 + 10*i
		mres := atkMaster(atkRow("r1", "10.0.0.2", "sync"))
		mres.LSN = 10 << 20
		c.CheckOK(atkM, mres, atkAt(ms), atkAt(ms+1), "10.0.0.1")
		c.CheckOK(atkR1, atkReplica("r1", atkR1Start), atkAt(ms+2), atkAt(ms+3), "10.0.0.2")
		c.CheckOK(a, atkReplica("r1", atkR1Start), atkAt(ms+4), atkAt(ms+5), "10.0.0.3")
	}
	r1 := c.Node(atkR1)
	t.Logf("r1: role %v lag %d known %v; A: alias %v role %v lag %d known %v",
		r1.Role, r1.LagBytes, r1.LagKnown, ax.AliasOf != nil, ax.Role, ax.LagBytes, ax.LagKnown)
	if ax.Role.IsReplica() && ax.LagKnown && ax.LagBytes < r1.LagBytes {
		t.Errorf("A (the same server as r1) reports a known lag of %d bytes; the server is %d bytes behind", ax.LagBytes, r1.LagBytes)
	}
}

// ForgetTimeline counts every writable node, one nothing vouches for (or
// of another cluster) included: a rogue writable on timeline 99 turns off
// the ahead-replica evidence for every timeline up to 99, for good.
func TestAttackForgetTimelineRogueDisablesAheadProof(t *testing.T) {
	c := atkCluster(t, false)
	rogue := atkMaster()
	rogue.Timeline, rogue.StartTime = 99, atkT0.Add(-5*time.Hour)
	c.CheckOK(atkX, rogue, atkAt(10), atkAt(11), "10.0.0.9")
	if c.Node(atkX).Vouched {
		t.Fatal("setup: rogue vouched")
	}
	c.ForgetTimeline(atkAt(12))
	t.Logf("ignoreAhead after ForgetTimeline: %d", c.ignoreAhead)
	// The rogue leaves. M keeps being elected on timeline 1, so the
	// evidence stays off.
	c.SetMembers(atkAt(13), atkMembers(false)[:2])
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(14), atkAt(15), "10.0.0.1")
	// r1 shows WAL on timeline 1 that M never wrote (M came back from
	// an older copy of its disk, or another server wrote timeline 1 past
	// M's position): M must be stale.
	r := atkReplica("r1", atkR1Start)
	r.LSN, r.ReceiveLSN = 5000, 5000
	r.UpstreamHost = "10.0.0.77"
	c.CheckOK(atkR1, r, atkAt(16), atkAt(17), "10.0.0.2")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(18), atkAt(19), "10.0.0.1")
	e := c.Elected()
	t.Logf("ignoreAhead %d; master %v; M stale %v", c.ignoreAhead, e.Master != nil, c.Node(atkM).Stale)
	if c.ignoreAhead == 99 {
		t.Errorf("a writable node nothing vouches for set how far ForgetTimeline ignores ahead replicas (timeline 99), and it stays after it left")
	}
}

// The control: the same without ForgetTimeline makes M stale.
func TestAttackAheadProofControl(t *testing.T) {
	c := atkCluster(t, false)
	r := atkReplica("r1", atkR1Start)
	r.LSN, r.ReceiveLSN = 5000, 5000
	r.UpstreamHost = "10.0.0.77"
	c.CheckOK(atkR1, r, atkAt(16), atkAt(17), "10.0.0.2")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(18), atkAt(19), "10.0.0.1")
	if c.Elected().Master != nil || !c.Node(atkM).Stale {
		t.Errorf("control: M must be stale behind r1 (master %v, stale %v)", c.Elected().Master != nil, c.Node(atkM).Stale)
	}
}

// Vouching outlives the server it was earned by: a replica listed by the
// master from its address, then another server answers at that address
// (its ServerID changes), writable on a newer timeline of cluster 42.
func TestAttackVouchOutlivesServer(t *testing.T) {
	c := atkCluster(t, false)
	c.CheckOK(atkX, atkReplica("x", atkT0.Add(-3*time.Hour)), atkAt(10), atkAt(11), "10.0.0.9")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync"), atkRow("x", "10.0.0.9", "async")), atkAt(12), atkAt(13), "10.0.0.1")
	if !c.Node(atkX).Vouched {
		t.Fatalf("setup: x not vouched, role %v", c.Node(atkX).Role)
	}
	other := atkMaster()
	other.Timeline, other.StartTime, other.LSN = 7, atkT0.Add(time.Minute), 1
	c.CheckOK(atkX, other, atkAt(20), atkAt(21), "10.0.0.9")
	e := c.Elected()
	t.Logf("master %v; M role %v stale %v", e.Master, c.Node(atkM).Role, c.Node(atkM).Stale)
	if e.Master != nil && e.Master.ID == atkX {
		t.Errorf("another server at x's address (new start time, timeline 7) takes writes on x's old vouching; M is %v", c.Node(atkM).Role)
	}
}

// Debian's default cluster_name ("16/main") on every server, so every
// walreceiver reports that name. r1 streams from the master but is not in
// the set (or is down as we see it); r2 is in the set, up, not streaming
// (its walreceiver cannot start: a removed segment, a broken slot) and far
// behind. The master lists one row by that name, from r1's address. The
// check user has pg_monitor: addresses are shown.
func TestAttackOrphanTakesStreamingNamesakesSyncRow(t *testing.T) {
	c := New(Config{})
	const r2 ID = 5
	c.SetMembers(atkAt(0), []Member{
		{ID: atkM, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: r2, Addr: "10.0.0.3:5432", Host: "10.0.0.3", Trusted: true},
	})
	row := atkRow("16/main", "10.0.0.2", "sync")
	row.ReplayLSN = 10<<20 - 100
	row.ReplayLag, row.HasReplayLag = 2*time.Millisecond, true
	mres := atkMaster(row)
	mres.LSN = 10 << 20
	orphan := checker.Result{InRecovery: true, ReadOnly: true, Timeline: 1, LSN: 100, Name: "16/main",
		SystemID: 42, StartTime: atkT0.Add(-3 * time.Hour)}
	c.CheckOK(r2, orphan, atkAt(1), atkAt(2), "10.0.0.3")
	c.CheckOK(atkM, mres, atkAt(3), atkAt(4), "10.0.0.1")
	c.CheckOK(r2, orphan, atkAt(5), atkAt(6), "10.0.0.3")
	x := c.Node(r2)
	t.Logf("orphan r2: role %v sync %q lag %d known %v detached %q", x.Role, x.SyncState, x.LagBytes, x.LagKnown, x.Detached)
	if x.Role.IsReplica() {
		t.Errorf("r2, not streaming and 10 MB behind, serves reads as %v with a known lag of %d bytes (the row is r1's, from 10.0.0.2)", x.Role, x.LagBytes)
	}
}

// The same vouching, used by another server at x's address that claims WAL
// on timeline 1 past the master's position, then stops answering (it stays
// in the discoverer's set): the master stays stale after it went quiet.
func TestAttackVouchOutlivesServerAheadStaysAfterDown(t *testing.T) {
	c := atkCluster(t, false)
	c.CheckOK(atkX, atkReplica("x", atkT0.Add(-3*time.Hour)), atkAt(10), atkAt(11), "10.0.0.9")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync"), atkRow("x", "10.0.0.9", "async")), atkAt(12), atkAt(13), "10.0.0.1")
	if !c.Node(atkX).Vouched {
		t.Fatalf("setup: x not vouched")
	}
	liar := atkReplica("x", atkT0.Add(time.Minute))
	liar.LSN, liar.ReceiveLSN = 1<<40, 1<<40
	c.CheckOK(atkX, liar, atkAt(20), atkAt(21), "10.0.0.9")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(22), atkAt(23), "10.0.0.1")
	t.Logf("while the liar answers: master %v, M %v", c.Elected().Master != nil, c.Node(atkM).Role)
	c.CheckFailed(atkX, errors.New("connection refused"), false, atkAt(30))
	for i := range 10 {
		ms := 40 + 10*i
		c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(ms), atkAt(ms+1), "10.0.0.1")
		c.CheckOK(atkR1, atkReplica("r1", atkR1Start), atkAt(ms+2), atkAt(ms+3), "10.0.0.2")
		c.CheckFailed(atkX, errors.New("connection refused"), false, atkAt(ms+4))
	}
	t.Logf("after it went quiet: master %v, M %v", c.Elected().Master != nil, c.Node(atkM).Role)
	if c.Elected().Master == nil {
		t.Errorf("writes stay refused (M %v) after the server that claimed WAL past M stopped answering", c.Node(atkM).Role)
	}
}

// Shared name, both replicas in the set and trusted: r1 streams, r2 does
// not (no walreceiver: orphaned, 10 MB behind). The master lists one row
// by the name, from r1's address. r2 must be detached.
func TestAttackOrphanBesideStreamingNamesakeServesReads(t *testing.T) {
	c := New(Config{})
	const r2 ID = 5
	c.SetMembers(atkAt(0), []Member{
		{ID: atkM, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: atkR1, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
		{ID: r2, Addr: "10.0.0.3:5432", Host: "10.0.0.3", Trusted: true},
	})
	row := atkRow("16/main", "10.0.0.2", "sync")
	row.ReplayLSN = 10 << 20
	mres := atkMaster(row)
	mres.LSN = 10 << 20
	streaming := atkReplica("16/main", atkR1Start)
	streaming.LSN, streaming.ReceiveLSN = 10<<20, 10<<20
	orphan := checker.Result{InRecovery: true, ReadOnly: true, Timeline: 1, LSN: 100, Name: "16/main",
		SystemID: 42, StartTime: atkT0.Add(-3 * time.Hour)}
	for i := range 3 {
		ms := 10 * i
		c.CheckOK(atkR1, streaming, atkAt(ms+1), atkAt(ms+2), "10.0.0.2")
		c.CheckOK(r2, orphan, atkAt(ms+3), atkAt(ms+4), "10.0.0.3")
		c.CheckOK(atkM, mres, atkAt(ms+5), atkAt(ms+6), "10.0.0.1")
	}
	x := c.Node(r2)
	t.Logf("orphan r2: role %v lag %d known %v detached %q syncUnknown %q", x.Role, x.LagBytes, x.LagKnown, x.Detached, x.SyncUnknown)
	if x.Role.IsReplica() {
		t.Errorf("r2, not streaming (no walreceiver, not the row from 10.0.0.2), serves reads as %v", x.Role)
	}
}

// One server under two trusted addresses, M (10.0.0.1) and B (a virtual
// address, 10.0.0.5), restarts: M's check sees the new postmaster start
// time before B's does.
func TestAttackRestartOfTwoAddressServerIsSplitBrain(t *testing.T) {
	c := New(Config{})
	const b ID = 6
	c.SetMembers(atkAt(0), []Member{
		{ID: atkM, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: atkR1, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
		{ID: b, Addr: "10.0.0.5:5432", Host: "10.0.0.5", Trusted: true},
	})
	c.CheckOK(atkR1, atkReplica("r1", atkR1Start), atkAt(1), atkAt(2), "10.0.0.2")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(3), atkAt(4), "10.0.0.1")
	c.CheckOK(b, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(5), atkAt(6), "10.0.0.5")
	if e := c.Elected(); e.Master == nil || len(e.SplitBrain) > 0 {
		t.Fatalf("setup: %+v", e)
	}
	restarted := atkMaster(atkRow("r1", "10.0.0.2", "sync"))
	restarted.StartTime = atkT0.Add(time.Second)
	c.CheckOK(atkM, restarted, atkAt(1000), atkAt(1001), "10.0.0.1")
	r := c.TakeReady()
	e := c.Elected()
	t.Logf("after M's check: master %v split brain %v (ready: split %v changed %v)", e.Master != nil, e.SplitBrain, r.SplitBrain, r.SplitBrainChanged)
	if len(e.SplitBrain) > 1 {
		t.Errorf("one restarted server under two addresses is reported as a split brain and writes are refused: %v", e.SplitBrain)
	}
}

// The ahead-replica evidence (TestAttackAheadProofControl makes M stale)
// is set aside when any writable node lists the replica, one nothing
// vouches for included: a rogue that copies the cluster's system
// identifier and lists r1 keeps M elected although r1 has WAL M never
// wrote.
func TestAttackRogueListingSuppressesAheadProof(t *testing.T) {
	c := atkCluster(t, false)
	rogue := atkMaster(atkRow("r1", "10.0.0.2", "sync"))
	rogue.Timeline, rogue.StartTime = 1, atkT0.Add(-5*time.Hour)
	c.CheckOK(atkX, rogue, atkAt(10), atkAt(11), "10.0.0.9")
	if c.Node(atkX).Vouched {
		t.Fatal("setup: rogue vouched")
	}
	r := atkReplica("r1", atkR1Start)
	r.LSN, r.ReceiveLSN = 5000, 5000
	r.UpstreamHost = "10.0.0.77"
	c.CheckOK(atkR1, r, atkAt(16), atkAt(17), "10.0.0.2")
	c.CheckOK(atkM, atkMaster(atkRow("r1", "10.0.0.2", "sync")), atkAt(18), atkAt(19), "10.0.0.1")
	e := c.Elected()
	t.Logf("master %v; M stale %v; rogue role %v", e.Master != nil, c.Node(atkM).Stale, c.Node(atkX).Role)
	if e.Master != nil && e.Master.ID == atkM {
		t.Errorf("M takes writes although vouched r1 has WAL on its timeline past M's position: the rogue's walsender row set the evidence aside")
	}
}

// The check user lacks pg_monitor: the master's rows show no address. A
// server nothing vouches for takes the name of r1, which is up: the row
// named r1 may be either's, so it proves nothing of the rogue, which must
// not serve reads; r1 still does.
func TestAttackRogueNamesakeHiddenRows(t *testing.T) {
	c := New(Config{})
	c.SetMembers(atkAt(0), atkMembers(false))
	hidden := checker.Replica{ApplicationName: "r1", State: "streaming", ReplayLSN: 900}
	c.CheckOK(atkR1, atkReplica("r1", atkR1Start), atkAt(1), atkAt(2), "10.0.0.2")
	c.CheckOK(atkM, atkMaster(hidden), atkAt(3), atkAt(4), "10.0.0.1")
	c.CheckOK(atkX, atkReplica("r1", atkT0.Add(-3*time.Hour)), atkAt(5), atkAt(6), "10.0.0.9")
	c.CheckOK(atkM, atkMaster(hidden), atkAt(7), atkAt(8), "10.0.0.1")
	x, r1 := c.Node(atkX), c.Node(atkR1)
	t.Logf("rogue: role %v vouched %v detached %q; r1: %v", x.Role, x.Vouched, x.Detached, r1.Role)
	if x.Role.IsReplica() {
		t.Errorf("a rogue nothing vouches for serves reads as %v by a row of r1's name", x.Role)
	}
	if !r1.Role.IsReplica() {
		t.Errorf("r1 is %v (%s)", r1.Role, r1.Detached)
	}
}
