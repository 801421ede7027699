package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// n2, the master's sync standby under FIRST 1 (n2, n3), stops streaming
// from the master and cascades from n3 (primary_conninfo changed and
// reloaded: PostgreSQL 13+ restarts the walreceiver; Patroni's
// replicatefrom tag does it). Its walsender on the master exits, the
// master makes n3 its sync standby and acknowledges commits n2 receives
// only later through n3. n2's own check shows the new upstream (which asks
// for the master's walsenders at its next check), but until then the only
// row saying n2 is sync is the walsender that served it before: like a
// restart (syncUnknownOldRows), it says nothing of n2 now. SyncOnly reads
// must not go to n2.
func TestSyncReplicaThatNowCascadesIsNotSyncOnTheOldRow(t *testing.T) {
	c, start2, start3 := syncN2(t)
	// n2 now streams from n3; n3's walsenders list it.
	r3 := rcReplica("n3", 1, 1000, start3, "10.0.0.1")
	r3.Replicas = []checker.Replica{{ApplicationName: "n2", SyncState: "async", ClientAddr: "10.0.0.2", State: "streaming", ReplayLSN: 1000}}
	c.CheckOK(3, r3, at(100), at(101), "10.0.0.3")
	c.CheckOK(2, rcReplica("n2", 1, 1000, start2, "10.0.0.3"), at(102), at(103), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Role == RoleSyncReplica {
		t.Fatalf("n2 streams from n3 now (upstream %s), the master's walsenders last read before: role %s, sync state %q; want no sync role until the master lists it again",
			x.Res.UpstreamHost, x.Role, x.SyncState)
	}
}

// The same with n2's walreceiver gone (a network cut between n2 and the
// master: wal_receiver_timeout ends it; the master's walsender, ended by
// wal_sender_timeout or a keepalive, no longer holds n2 as sync, and n3
// acknowledges commits n2 never receives). n2's check shows no
// walreceiver; the master's last read still shows n2's old row as sync.
func TestSyncReplicaWithItsWalreceiverGoneIsNotSyncOnTheOldRow(t *testing.T) {
	c, start2, _ := syncN2(t)
	r2 := rcReplica("n2", 1, 1000, start2, "")
	r2.ReceiveTimeline, r2.UpstreamPort = 0, 0
	c.CheckOK(2, r2, at(102), at(103), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Role == RoleSyncReplica {
		t.Fatalf("n2's walreceiver is gone, the master's walsenders last read before: role %s, sync state %q; want no sync role until the master lists it again",
			x.Role, x.SyncState)
	}
}

// The same change seen at n2's first check (a Manager started, or n2
// added by discovery, after the master's walsenders were read): n2's
// walreceiver connects to n3, a replica of the set, so the master's row
// of n2 read before is of a stream n2 left.
func TestSyncReplicaFirstSeenCascadingIsNotSyncOnTheOldRow(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	start2, start3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour)
	m := rcWritable("n1", 1, 1000, t0.Add(-3*time.Hour),
		checker.Replica{ApplicationName: "n2", SyncState: "sync", ClientAddr: "10.0.0.2", State: "streaming", ReplayLSN: 1000},
		checker.Replica{ApplicationName: "n3", SyncState: "potential", ClientAddr: "10.0.0.3", State: "streaming", ReplayLSN: 1000})
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	r3 := rcReplica("n3", 1, 1000, start3, "10.0.0.1")
	r3.Replicas = []checker.Replica{{ApplicationName: "n2", SyncState: "async", ClientAddr: "10.0.0.2", State: "streaming", ReplayLSN: 1000}}
	c.CheckOK(3, r3, at(100), at(101), "10.0.0.3")
	c.CheckOK(2, rcReplica("n2", 1, 1000, start2, "10.0.0.3"), at(102), at(103), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.Role == RoleSyncReplica {
		t.Fatalf("n2 streams from n3 (upstream %s) at its first check, the master's walsenders read before: role %s, sync state %q; want no sync role until the master lists it again",
			x.Res.UpstreamHost, x.Role, x.SyncState)
	}
}

// syncN2 is a cluster whose master n1 waits for n2 under FIRST 1 (n2, n3),
// every node checked once: n2 is sync. It returns the replicas' start
// times.
func syncN2(t *testing.T) (c *Core, start2, start3 time.Time) {
	t.Helper()
	c = New(Config{})
	c.SetMembers(at(0), members(3))
	start2, start3 = t0.Add(-time.Hour), t0.Add(-2*time.Hour)
	m := rcWritable("n1", 1, 1000, t0.Add(-3*time.Hour),
		checker.Replica{ApplicationName: "n2", SyncState: "sync", ClientAddr: "10.0.0.2", State: "streaming", ReplayLSN: 1000},
		checker.Replica{ApplicationName: "n3", SyncState: "potential", ClientAddr: "10.0.0.3", State: "streaming", ReplayLSN: 1000})
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, rcReplica("n2", 1, 1000, start2, "10.0.0.1"), at(3), at(4), "10.0.0.2")
	c.CheckOK(3, rcReplica("n3", 1, 1000, start3, "10.0.0.1"), at(3), at(4), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica {
		t.Fatalf("setup: n2 role %s, want sync", x.Role)
	}
	return c, start2, start3
}
