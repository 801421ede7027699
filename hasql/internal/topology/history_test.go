package topology

import "testing"

// A replica with no walreceiver shows its control data's timeline, which
// lags what it replays; the newest history file in its pg_wal proves a
// timeline exists all the same: the writable node on an older one is
// stale. A replica that streams says what it follows: a history file left
// from a branch it was rewound off proves nothing then.
func TestHistoryTimelineProvesANewerTimeline(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	c.CheckOK(1, master(1, 5000, "n2"), at(1), at(2), "10.0.0.1")
	r := replica("n2", 1, 1, 1000)
	r.HistoryTimeline = 2 // left over: it streams timeline 1
	c.CheckOK(2, r, at(3), at(4), "10.0.0.2")
	c.TakeReady()
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("a history file of a streaming replica made n1 stale: %+v", e)
	}
	if x := c.Node(2); !x.Role.IsReplica() {
		t.Fatalf("n2: role %s (%s)", x.Role, x.Detached)
	}

	r.ReceiveTimeline = 0 // its upstream is gone: control data shows 1
	c.CheckOK(2, r, at(5), at(6), "10.0.0.2")
	c.CheckOK(1, master(1, 6000, "n2"), at(7), at(8), "10.0.0.1")
	c.TakeReady()
	if e := c.Elected(); e.Master != nil || len(e.Stale) == 0 || e.Timeline != 2 {
		t.Fatalf("n2 holds timeline 2's history with no walreceiver: n1, on timeline 1, must be stale: %+v", e)
	}
}
