package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// The same as TestReplicaPromotedApartWaitsAtItsFirstWritableCheck with
// S's identity shown writable at S's address first by another machine (a
// rogue's copy of it, at 10.0.0.9, before the name reached S): S's first
// writable check overlaps Q's, which shows WAL past S's position that S
// never wrote. The wait counts from the first check that found S writable
// on the machine the check reaches now; counted from the copy's answers,
// S was elected at once, and T's writes past 0/3E8 were lost.
func TestWritableCopyOnAnotherMachineIsNotTheFirstWritableCheck(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	refused := errors.New("connection refused")
	q := replica("n2", 2, 0, 1500)
	s := master(2, 1000)
	s.Name, s.StartTime = "n3", t0.Add(-time.Hour)
	c.CheckFailed(1, refused, false, at(1))
	c.CheckOK(3, s, at(1), at(2), "10.0.0.9") // the copy
	c.CheckOK(2, q, at(3), at(6), "10.0.0.2")
	c.CheckOK(3, s, at(4), at(7), "10.0.0.3") // S itself: the name moved
	for round := range 5 {
		if m := c.Elected().Master; m != nil {
			t.Fatalf("round %d: %s elected (timeline 2 at %s) while replica Q replayed timeline-2 WAL up to %s it never wrote",
				round, m.Addr, checker.LSN(s.LSN), checker.LSN(1500))
		}
		ms := 1000 + 1000*round
		c.CheckFailed(1, refused, false, at(ms))
		c.CheckOK(2, q, at(ms+1), at(ms+2), "10.0.0.2")
		c.CheckOK(3, s, at(ms+3), at(ms+4), "10.0.0.3")
	}
	if x := c.Node(3); x.Role != RoleStaleMaster || x.StaleBehind != "10.0.0.2:5432" {
		t.Errorf("S is %s (stale behind %q), want a stale master behind Q", x.Role, x.StaleBehind)
	}
}
