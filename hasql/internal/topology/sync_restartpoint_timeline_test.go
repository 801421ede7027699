package topology

import (
	"errors"
	"testing"
)

// n1, promoted to timeline 2 a moment ago, is master with n2 sync: n2's
// walreceiver receives timeline 2, its last restartpoint is still on
// timeline 1 (none since the promotion: one comes with the next
// checkpoint the master writes, minutes later). n1 goes out of sight and
// n2's walreceiver stops with it: n2's check shows no walreceiver, and its
// timeline falls back to the restartpoint's, 1 (checker.Result.Timeline),
// with timeline 2's history file in its pg_wal. n2 follows no newer
// timeline than the one the master that called it sync was on: the sync
// state that master gave it stays, and PreferMaster takes it first.
func TestSyncStateKeptWhenTheWalreceiverStopsBeforeARestartpointOnTheMastersTimeline(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	m := master(2, 1000, "n2", "n3")
	m.Replicas[0].SyncState = "sync"
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 2, 2, 1000), at(3), at(4), "10.0.0.2")
	c.CheckOK(3, replica("n3", 2, 2, 1000), at(3), at(5), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica {
		t.Fatalf("setup: n2 %s", x.Role)
	}
	c.CheckFailed(1, errors.New("connection refused"), false, at(100))
	r := replica("n2", 1, 0, 1000) // no walreceiver: the restartpoint's timeline
	r.ReceiveLSN, r.HistoryTimeline = 0, 2
	c.CheckOK(2, r, at(150), at(151), "10.0.0.2")
	c.TakeReady()
	if x := c.Node(2); x.SyncState != "sync" || x.Role != RoleReplica {
		t.Fatalf("n2, called sync by the master on timeline 2, shows no walreceiver (restartpoint on timeline 1, timeline 2's history file): role %s, sync state %q, sync unknown %q; want replica with sync state \"sync\" (PreferMaster's first choice with no master known)",
			x.Role, x.SyncState, x.SyncUnknown)
	}
}
