package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// A member that moved to another address (a Kubernetes pod rescheduled):
// the connection string's host at the old address, named by the source
// before, is down; the source reports the member's name at the new
// address, whose server streams from the master, which lists it by that
// name from the new address. The new address follows the master.
func TestMovedMemberListedFromItsNewAddressFollows(t *testing.T) {
	c := New(Config{})
	m2 := rcMember(2, "10.0.0.2", true)
	m2.Name = "pg2"
	m3 := rcMember(3, "10.0.0.7", false)
	m3.Name = "pg2"
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), m2, m3})
	s1, s3 := t0.Add(-time.Hour), t0.Add(-3*time.Hour)
	row := checker.Replica{ApplicationName: "pg2", ClientAddr: "10.0.0.7", State: "streaming", SyncState: "async", ReplayLSN: 100000}
	ms := 0
	round := rounds(&ms)
	for range 3 {
		round(func() {
			c.CheckOK(1, rcWritable("pg1", 1, 100000, s1, row), at(ms+1), at(ms+2), "10.0.0.1")
		}, func() {
			c.CheckFailed(2, errors.New("connection refused"), false, at(ms+3))
		}, func() {
			c.CheckOK(3, rcReplica("pg2", 1, 100000, s3, "10.0.0.1"), at(ms+5), at(ms+6), "10.0.0.7")
		})
		c.TakeReady()
	}
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", c.Elected())
	}
	x := c.Node(3)
	t.Logf("n3: role %v, vouched %v, detached %q", x.Role, x.Vouched, x.Detached)
	if !x.Role.IsReplica() {
		t.Errorf("n3, listed by the master from its own address, is %v: %s", x.Role, x.Detached)
	}
}
