package topology

import (
	"testing"

	"github.com/pgxha/pgxha/checker"
)

// A WAL switch (pg_switch_wal, pg_basebackup's backup end, archive_timeout)
// on a healthy master n1 with its replica n2. Observed on PostgreSQL 15
// (read strictly in this order: the replica's query
// answered, then the master's began):
//
//	replica: pg_last_wal_receive_lsn() 0/B8188000, pg_last_wal_replay_lsn() 0/B9000000
//	master, afterwards: pg_current_wal_lsn() 0/B8DDE000
//
// The replica replayed the XLOG_SWITCH record, and its replay position is
// the end of the segment (the reader takes a switch record to extend to
// it), while the master was still writing the segment's padding: its
// write position is below the segment's end. The check takes the replica's
// position as max(replay, receive) = 0/B9000000, read before the master's
// check began, past the master's 0/B8DDE000: the healthy master is proved
// behind its own replica, for good (the proof is of its own server).
func TestWALSwitchDoesNotProveTheMasterBehind(t *testing.T) {
	c := walSwitchRun(t, 0xB9000000, 0xB8188000)
	e, n1 := c.Elected(), c.Node(1)
	if e.Master == nil || e.Master.ID != 1 {
		t.Errorf("the healthy master is not master after a WAL switch: role %s, stale %v, behind %q; election %+v",
			n1.Role, n1.Stale, n1.StaleBehind, e)
	}
}

// Control: the same events with the replica's replay position where its
// received WAL ends (no switch record replayed): n1 stays master.
func TestWALSwitchControl(t *testing.T) {
	c := walSwitchRun(t, 0xB8188000, 0xB8188000)
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Errorf("control: n1 not master: %+v", e)
	}
}

// walSwitchRun feeds a core n1, a master, and n2, its replica: steady
// state; then n2's check, answered at 203, with replay and recv (the
// switch: the segment's end replayed, less received); then n1's check,
// begun at 204, still short of the segment's end; then both writing on
// into the next segment.
func walSwitchRun(t *testing.T, replay, recv checker.LSN) *Core {
	t.Helper()
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	m := func(lsn checker.LSN) checker.Result { return master(1, lsn, "n2") }
	r := func(replay, recv checker.LSN) checker.Result {
		x := replica("n2", 1, 1, replay)
		x.ReceiveLSN = recv
		return x
	}
	c.CheckOK(1, m(0xB8000000), at(1), at(2), "10.0.0.1")
	c.CheckOK(2, r(0xB7FF0000, 0xB8000000), at(1), at(3), "10.0.0.2")
	c.CheckOK(1, m(0xB8100000), at(100), at(101), "10.0.0.1")
	c.CheckOK(2, r(0xB8100000, 0xB8100000), at(100), at(102), "10.0.0.2")
	if e := c.Elected(); e.Master == nil || e.Master.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", e)
	}
	c.CheckOK(2, r(replay, recv), at(200), at(203), "10.0.0.2")
	c.CheckOK(1, m(0xB8DDE000), at(204), at(205), "10.0.0.1")
	for i := 0; i < 20; i++ {
		lsn := checker.LSN(0xB9001000 + 0x1000*i)
		c.CheckOK(2, r(lsn, lsn), at(300+100*i), at(302+100*i), "10.0.0.2")
		c.CheckOK(1, m(lsn+0x100), at(303+100*i), at(304+100*i), "10.0.0.1")
	}
	return c
}
