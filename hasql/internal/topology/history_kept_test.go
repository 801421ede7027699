package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// The proof a history file gives ended once the replica streamed an older
// timeline. But streaming an older timeline
// is exactly what a replica left behind on the old branch does when its
// walreceiver reaches the old master (primary_conninfo with several hosts,
// target_session_attrs=read-write, or a name that points at "the master"),
// and what a replica behind the fork point does for a moment while it
// catches up to the switch point. Neither says the file is left over.
//
// The Manager here never saw timeline 2 on a server: it started while the
// cluster was degraded (DESIGN.md's unfriendly cases), or is one of a fleet
// whose link to n2 is cut. n1 was the master on timeline 1; n2 was
// promoted (timeline 2) and took acknowledged writes; n1, fenced, comes
// back writable on timeline 1 (its old configuration). n2's checks fail.
// n3, an async replica that had WAL past n2's fork point, fetched
// 00000002.history from n2 and could not follow it: no walreceiver,
// HistoryTimeline 2. n1 is stale: right. Then n3's walreceiver reaches n1
// and streams timeline 1 from it, and n1 lists it: the core forgets
// timeline 2 and elects n1, writes go to it, and once n2 is back (it is
// on timeline 2, newer) every write acknowledged on n1 is lost (or, if the
// operator keeps n1, every write acknowledged on n2). Before ae8335f
// (seenTL took HistoryTimeline and kept it) n1 stayed stale.
func TestLeftBehindReplicaStreamingTheOldMasterKeepsTheNewTimeline(t *testing.T) {
	for _, timeout := range []bool{false, true} {
		name := "n2 refused"
		if timeout {
			name = "n2 partitioned from this Manager"
		}
		t.Run(name, func(t *testing.T) {
			c := New(Config{})
			c.SetMembers(at(0), members(3))
			n2Err := errors.New("connection refused")
			if timeout {
				n2Err = errors.New("check timed out")
			}
			c.CheckFailed(2, n2Err, timeout, at(1))
			c.CheckFailed(2, n2Err, timeout, at(2))
			old := master(1, 6000) // n1, the fenced old master, back on timeline 1
			old.StartTime = t0.Add(time.Hour)
			c.CheckOK(1, old, at(3), at(4), "10.0.0.1")
			r3 := replica("n3", 1, 0, 5500) // left behind past the fork point
			r3.HistoryTimeline = 2          // fetched from n2
			c.CheckOK(3, r3, at(3), at(5), "10.0.0.3")
			c.CheckOK(1, old, at(6), at(7), "10.0.0.1")
			c.TakeReady()
			if e := c.Elected(); e.Master != nil || e.Timeline != 2 {
				t.Fatalf("start: n3 holds timeline 2's history, n1 is on 1: %+v", e)
			}
			// n3's walreceiver reaches n1 (the only read-write host it can
			// reach) and streams timeline 1 from it; n1 lists it.
			for i := 0; i < 10; i++ {
				ms := 100 + 500*i
				c.CheckFailed(2, n2Err, timeout, at(ms))
				m := master(1, checker.LSN(6000+100*i), "n3")
				m.StartTime = old.StartTime
				c.CheckOK(1, m, at(ms+1), at(ms+2), "10.0.0.1")
				r := replica("n3", 1, 1, checker.LSN(6000+100*i))
				r.HistoryTimeline = 0 // not read while the walreceiver runs
				r.UpstreamHost, r.UpstreamPort = "10.0.0.1", 5432
				c.CheckOK(3, r, at(ms+3), at(ms+4), "10.0.0.3")
				if e := c.Elected(); e.Master != nil {
					t.Fatalf("after %d rounds: %s elected on timeline %d (core timeline now %d), although n3 showed timeline 2's history file and nothing shows that timeline was given up: n2, on timeline 2, had acknowledged writes; every write to n1 now is lost when it comes back",
						i+1, e.Master.Addr, e.Master.Res.Timeline, c.Timeline())
				}
			}
		})
	}
}

// The same hazard with a replica that really is on its way to timeline 2:
// it was behind n2's fork point, fetched 00000002.history from n2 (so its
// recovery_target_timeline 'latest' is now 2), and n2 died. Its walreceiver
// reaches n1 (old master, back on timeline 1) and streams timeline 1 up to
// the fork point (received_tli 1): PostgreSQL will not let it past the
// fork point on timeline 1 ("highest timeline 1 of the primary is behind
// recovery timeline 2"), but for as long as it streams the core takes the
// history file as left over and elects n1.
func TestReplicaCatchingUpToTheForkPointKeepsTheNewTimeline(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	refused := errors.New("connection refused")
	c.CheckFailed(2, refused, false, at(1))
	old := master(1, 6000)
	old.StartTime = t0.Add(time.Hour)
	c.CheckOK(1, old, at(2), at(3), "10.0.0.1")
	r3 := replica("n3", 1, 0, 4000) // behind the fork point (5000)
	r3.HistoryTimeline = 2
	c.CheckOK(3, r3, at(2), at(4), "10.0.0.3")
	c.CheckOK(1, old, at(5), at(6), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("start: %+v", e)
	}
	m := master(1, 6000, "n3")
	m.StartTime = old.StartTime
	r := replica("n3", 1, 1, 4500) // streams timeline 1 toward the fork point
	r.UpstreamHost, r.UpstreamPort = "10.0.0.1", 5432
	c.CheckOK(3, r, at(10), at(11), "10.0.0.3")
	c.CheckOK(1, m, at(12), at(13), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1 while n3, whose recovery target is timeline 2 (its history file), catches up to the fork point: core timeline %d", e.Master.Addr, c.Timeline())
	}
}

// The newer timeline's master is alive, and the replica that proved it
// streams from it. n1 was master on timeline 2; a failover promoted n4 to
// timeline 3 (n1 cut off, not fenced: it runs on, or was restarted with its
// old configuration); this Manager's checks of n4 time out (its link to n4
// is cut, or it is one of a fleet). n2, repointed to n4, fetched
// 00000003.history: between two connections of its walreceiver it shows
// HistoryTimeline 3, and n1 is stale. Then n2 streams from n4 the rest of
// timeline 2 up to n4's switch point (received_tli 2: "the timeline of the
// first log location used when WAL receiver is started"), on its way to
// timeline 3. The core takes the file for left over, forgets timeline 3,
// and elects n1 while n4 takes writes on timeline 3: the split brain
// DESIGN.md's timeline rule exists to refuse. (A review's sweep of the
// simulation reached this shape after a repair: 10.0.0.3 elected on
// timeline 2 while n4 was master on timeline 3 and 10.0.0.2 streamed
// timeline 2 toward it.)
func TestReplicaStreamingTowardTheNewTimelineKeepsIt(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(4))
	cutOff := errors.New("check timed out")
	c.CheckFailed(4, cutOff, true, at(1))
	c.CheckFailed(4, cutOff, true, at(2))
	c.CheckFailed(3, errors.New("connection refused"), false, at(2)) // a third replica, down
	c.CheckOK(1, master(2, 9000), at(3), at(4), "10.0.0.1")
	r2 := replica("n2", 2, 0, 7000) // behind n4's switch point (8000)
	r2.HistoryTimeline = 3
	c.CheckOK(2, r2, at(3), at(5), "10.0.0.2")
	c.CheckOK(1, master(2, 9100), at(6), at(7), "10.0.0.1")
	if e := c.Elected(); e.Master != nil || e.Timeline != 3 {
		t.Fatalf("start: n2 holds timeline 3's history, n1 is on 2: %+v", e)
	}
	r := replica("n2", 2, 2, 7500) // timeline 2 from n4, toward the switch point
	r.UpstreamHost, r.UpstreamPort = "10.0.0.4", 5432
	c.CheckOK(2, r, at(10), at(11), "10.0.0.2")
	c.CheckFailed(4, cutOff, true, at(12))
	c.CheckOK(1, master(2, 9200), at(13), at(14), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 2 while n2 streams from n4 (10.0.0.4), whose timeline 3 its history file showed: core timeline %d", e.Master.Addr, c.Timeline())
	}
}

// histTL is kept per node (address), not per server, and cleared by
// whatever server answers there next: a name that moves (a read VIP, a DNS
// name of the replica pool) off the replica that holds the newer
// timeline's file, onto another replica that streams timeline 1 from the
// old master, drops the proof although the file is still where it was,
// and nothing checked that server since.
func TestHistoryProofKeptWhenAnotherServerAnswersAtTheAddress(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	refused := errors.New("connection refused")
	c.CheckFailed(3, refused, false, at(1)) // n3: timeline 2's master, dead (or cut off)
	old := master(1, 6000, "n4")
	old.StartTime = t0.Add(time.Hour)
	c.CheckOK(1, old, at(2), at(3), "10.0.0.1")
	held := replica("n2", 1, 0, 5500) // left behind, holds 00000002.history
	held.HistoryTimeline = 2
	c.CheckOK(2, held, at(2), at(4), "10.0.0.2")
	c.CheckOK(1, old, at(5), at(6), "10.0.0.1")
	if e := c.Elected(); e.Master != nil || e.Timeline != 2 {
		t.Fatalf("start: %+v", e)
	}
	// The name 10.0.0.2 now reaches n4, another replica (no history file
	// of timeline 2) streaming timeline 1 from n1; n2 still holds the file.
	n4 := replica("n4", 1, 1, 6000)
	n4.StartTime = t0.Add(2 * time.Hour)
	n4.UpstreamHost, n4.UpstreamPort = "10.0.0.1", 5432
	c.CheckOK(2, n4, at(10), at(11), "10.0.0.9")
	c.CheckFailed(3, refused, false, at(12))
	c.CheckOK(1, old, at(13), at(14), "10.0.0.1")
	if e := c.Elected(); e.Master != nil {
		t.Fatalf("%s elected on timeline 1: the proof of timeline 2 (n2's history file, still in n2's pg_wal) was dropped because another server answered at n2's address: core timeline %d",
			e.Master.Addr, c.Timeline())
	}
}
