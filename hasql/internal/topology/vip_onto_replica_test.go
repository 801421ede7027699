package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// A split brain: M (reached through a VIP listed first and its own
// address, its alias) and W (promoted apart: the same timeline number)
// are both writable on timeline 2; writes are refused. Every server goes
// by one name (Debian's cluster_name "16/main", which a walreceiver
// without application_name uses too). The VIP moves to Q, a replica of M
// (a stale record, a keepalived misconfiguration, a failover script that
// picked the wrong node). M's own address must not stay an alias of the
// VIP, now a replica: M, writable, would be hidden from the election and
// W elected alone while M still takes writes. A writable node is not
// carried as the alias of one that is not
// (TestMovedVIPDoesNotHideASplitBrain covers the VIP moving onto a
// writable server).
func TestVIPMovedOntoAReplicaDoesNotHideASplitBrain(t *testing.T) {
	for _, onto := range []string{"control: VIP stays", "control: replica Q named q", "replica Q"} {
		c := New(Config{})
		const vip ID = 5
		c.SetMembers(at(0), []Member{rcMember(vip, "10.0.0.9", true), rcMember(1, "10.0.0.1", true),
			rcMember(3, "10.0.0.3", true), rcMember(4, "10.0.0.4", true)})
		const name = "16/main"
		qrow := checker.Replica{ApplicationName: name, ClientAddr: "10.0.0.4", State: "streaming", SyncState: "async", ReplayLSN: 1000}
		sM, sW, sQ := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
		m := rcWritable(name, 2, 1000, sM, qrow)
		w := rcWritable(name, 2, 2000, sW)
		q := rcReplica(name, 2, 1000, sQ, "10.0.0.1")
		c.CheckOK(vip, m, at(1), at(2), "10.0.0.9")
		c.CheckOK(1, m, at(1), at(3), "10.0.0.1")
		c.CheckOK(4, q, at(4), at(5), "10.0.0.4")
		c.CheckOK(3, w, at(6), at(7), "10.0.0.3")
		if e := c.Elected(); e.Master != nil || len(e.SplitBrain) != 2 || c.Node(1).AliasOf != c.Node(vip) {
			t.Fatalf("%s: setup: master %v, split brain %v, M's address alias of %v", onto, e.Master, e.SplitBrain, c.Node(1).AliasOf)
		}
		next := m
		switch onto {
		case "replica Q":
			next = q
		case "control: replica Q named q":
			next = rcReplica("q", 2, 1000, sQ, "10.0.0.1")
		}
		c.CheckOK(vip, next, at(500), at(501), "10.0.0.9")
		e := c.Elected()
		aliasOf := ""
		if a := c.Node(1).AliasOf; a != nil {
			aliasOf = a.Addr
		}
		masterAddr := ""
		if e.Master != nil {
			masterAddr = e.Master.Addr
		}
		t.Logf("%s: master %q, split brain %v, M's address (writable %v) alias of %q", onto, masterAddr, e.SplitBrain, c.Node(1).Writable, aliasOf)
		if e.Master != nil {
			t.Errorf("%s: %s elected alone while M, writable on the same timeline 2 at 10.0.0.1 (checked at 3 ms, nothing says it changed), is hidden as an alias of the VIP, which now reaches replica Q",
				onto, e.Master.Addr)
		}
		// M's own address checked again: the split brain shows again.
		c.CheckOK(1, m, at(1000), at(1001), "10.0.0.1")
		e = c.Elected()
		t.Logf("%s: after M's address is checked again: master %v, split brain %v", onto, e.Master != nil, e.SplitBrain)
		if e.Master != nil || len(e.SplitBrain) != 2 {
			t.Errorf("%s: M and W writable on timeline 2, M checked again: master %v, split brain %v", onto, e.Master != nil, e.SplitBrain)
		}
	}
}
