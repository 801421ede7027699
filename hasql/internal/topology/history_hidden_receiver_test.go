package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// TestLeftOverHistoryFileOfAStreamingReplicaEndsWithAHiddenWalreceiver:
// the check user lacks pg_read_all_stats (pg_stat_wal_receiver shows it
// the pid alone: ReceiverHidden, Timeline from the control data) but may
// list pg_wal (GRANT EXECUTE ON FUNCTION pg_ls_waldir(), a part of
// pg_monitor granted alone, as WAL-directory monitoring does): the checker
// reads the newest history file of every replica whose walreceiver it
// cannot see, streaming ones included.
//
// How PostgreSQL gets there: the cluster is on timeline 2 (master n1).
// Replica n3 streamed timeline 2 from n1 and was then repointed to cascade
// from n2; meanwhile n2 was promoted by mistake (timeline 3, forked before
// n3's position). n3's walreceiver connected to n2, fetched
// 00000003.history, and could not follow timeline 3 (n3 is past its fork
// point). n2 was rewound onto n1 (pg_rewind removes its own
// 00000003.history) and n3 repointed back to n1: n3 streams timeline 2
// from n1 and keeps 00000003.history in pg_wal for good (PostgreSQL never
// removes history files). No server writes on timeline 3 or ever will.
//
// n1 is the master and n3 streams from it (n1 lists n3, n3's replay
// follows n1's): a file no server can follow must not keep n1 stale for
// good, as it does not where the walreceiver shows (histLeftOver ends the
// proof once n3 is seen streaming timeline 2 from n1), nor after the
// operator's ForgetTimeline.
func TestLeftOverHistoryFileOfAStreamingReplicaEndsWithAHiddenWalreceiver(t *testing.T) {
	for _, hidden := range []bool{false, true} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
		s1, s2, s3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
		rows := []checker.Replica{
			{ApplicationName: "n2", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "async"},
			{ApplicationName: "n3", ClientAddr: "10.0.0.3", State: "streaming", SyncState: "async"},
		}
		replica := func(name string, lsn checker.LSN, start time.Time) checker.Result {
			r := rcReplica(name, 2, lsn, start, "10.0.0.1")
			if hidden {
				// The walreceiver shows its pid alone; the rows their
				// names and addresses, no state.
				r.ReceiveTimeline, r.UpstreamHost, r.UpstreamPort, r.ReceiverHidden = 0, "", 0, true
				r.HistoryTimeline = 2
				if name == "n3" {
					r.HistoryTimeline = 3
				}
			}
			return r
		}
		if hidden {
			for i := range rows {
				rows[i].State, rows[i].SyncState = "", ""
			}
		}
		ms := 0
		lsn := checker.LSN(1000)
		step := func() {
			lsn += 10
			c.CheckOK(1, rcWritable("n1", 2, lsn, s1, rows...), at(ms+1), at(ms+2), "10.0.0.1")
			c.CheckOK(2, replica("n2", lsn, s2), at(ms+3), at(ms+4), "10.0.0.2")
			c.CheckOK(3, replica("n3", lsn, s3), at(ms+5), at(ms+6), "10.0.0.3")
			ms += 500
		}
		for range 20 {
			step()
		}
		if m := c.Elected().Master; m == nil || m.ID != 1 {
			t.Errorf("hidden walreceivers %v: after 20 rounds of checks n1, the one master, which n2 and n3 stream from, is not master: %+v (n1 %v %q, cluster timeline %d)",
				hidden, c.Elected(), c.Node(1).Role, c.Node(1).Waiting, c.Timeline())
		}
		// The operator's way out of a stale master.
		c.ForgetTimeline(at(ms))
		for range 5 {
			step()
		}
		if m := c.Elected().Master; m == nil || m.ID != 1 {
			t.Errorf("hidden walreceivers %v: after ForgetTimeline and 5 more rounds n1 is not master: %+v (cluster timeline %d)",
				hidden, c.Elected(), c.Timeline())
		}
	}
}

// TestHistoryProofEndsOnceAHiddenWalreceiverIsListedByTheMaster: the check
// user is the replication role, allowed to list pg_wal. n3's walreceiver
// did not run at its first checks (its upstream was being repointed) and
// it showed 00000003.history, fetched from a server it could not follow:
// a proof that timeline 3 exists, which keeps n1 (timeline 2) stale. Then
// its walreceiver runs, hidden from the check user, and n1 lists n3 by its
// name from its address: n3 streams timeline 2 from n1, and the file is
// left over. n1 is master again once every node answered since.
func TestHistoryProofEndsOnceAHiddenWalreceiverIsListedByTheMaster(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(3, "10.0.0.3", true)})
	s1, s3 := t0.Add(-time.Hour), t0.Add(-3*time.Hour)
	n3 := func(receiver bool) checker.Result {
		r := rcReplica("n3", 2, 1000, s3, "")
		r.ReceiveTimeline, r.UpstreamPort = 0, 0
		if receiver {
			r.ReceiverHidden = true
		} else {
			r.HistoryTimeline = 3
		}
		return r
	}
	ms := 0
	round := rounds(&ms)
	round(func() {
		c.CheckOK(1, rcWritable("n1", 2, 1000, s1), at(ms+1), at(ms+2), "10.0.0.1")
	}, func() {
		c.CheckOK(3, n3(false), at(ms+3), at(ms+4), "10.0.0.3")
	})
	if m := c.Elected().Master; m != nil {
		t.Fatalf("setup: n1 on timeline 2 must be stale while n3 holds timeline 3's history file: %+v", c.Elected())
	}
	rows := []checker.Replica{{ApplicationName: "n3", ClientAddr: "10.0.0.3"}}
	for range 3 {
		round(func() {
			c.CheckOK(1, rcWritable("n1", 2, 1000, s1, rows...), at(ms+1), at(ms+2), "10.0.0.1")
		}, func() {
			c.CheckOK(3, n3(true), at(ms+3), at(ms+4), "10.0.0.3")
		})
	}
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Errorf("n3 streams from n1 (listed by its name from its address), its walreceiver hidden: n1 is not master: %+v (timeline %d)",
			c.Elected(), c.Timeline())
	}
}
