package topology

import (
	"errors"
	"testing"
	"time"
)

// syncTrio (the master's walsenders read at 0.001s call n2 sync); discovery
// then adds node 4 (trusted), another address of n2's server, whose first
// check fails (the name did not resolve yet, or the server refused
// connections while it restarted). n2's server restarts. Node 4 comes up at
// 0.2s on the new run, its walreceiver not started yet: the name read is
// its cluster_name "batman" (Patroni's scope). Node 2, n2's own address,
// finds the new run at 0.21s with the walreceiver started, named "n2".
// Node 4 never showed the run before: its return from down records no
// restart of n2's server, and node 2, which showed that run, must take the
// row read at 0.001s for the run before, as it does when node 4's first
// check answers.
func TestRestartSeenUnderTheClusterNameAtAnAddressBackFromItsFirstFailureStillEndsTheOldSyncRow(t *testing.T) {
	for _, tc := range []struct {
		name        string
		failedFirst bool
	}{
		{"control: node 4's first check answers", false},
		{"node 4's first check failed, its second answers", true},
	} {
		c := syncTrio(t)
		c.SetMembers(at(150), append(members(3), rcMember(4, "10.0.0.4", true)))
		if tc.failedFirst {
			c.CheckFailed(4, errors.New("connection refused"), false, at(160))
		}
		r := replica("n2", 1, 0, 900) // restarted, walreceiver not started yet
		r.StartTime = r.StartTime.Add(time.Minute)
		r.Name = "batman"
		c.CheckOK(4, r, at(200), at(201), "10.0.0.2")
		r2 := replica("n2", 1, 1, 900) // the same run, its walreceiver started
		r2.StartTime = r.StartTime
		c.CheckOK(2, r2, at(210), at(211), "10.0.0.2")
		c.TakeReady()
		for _, id := range []ID{2, 4} {
			if x := c.Node(id); x.Role == RoleSyncReplica {
				t.Errorf("%s: n2's server restarted (new run seen at node 4 as \"batman\" at 0.2s, then at node 2 as \"n2\" at 0.21s), the master's walsenders last read at 0.001s: node %d (%s) alias of %s, vouched %v, role %s, sync state %q, backSince %s; want no sync role until the master lists the new run",
					tc.name, x.ID, x.Addr, aliasName(x), x.Vouched, x.Role, x.SyncState, sinceText(x))
			}
		}
	}
}
