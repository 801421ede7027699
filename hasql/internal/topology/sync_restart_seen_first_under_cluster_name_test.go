package topology

import (
	"testing"
	"time"
)

// syncTrio (the master's walsenders read at 0.001s call n2 sync); discovery
// adds node 4 (trusted), another address of n2's server, first checked at
// 0.16s while n2's walreceiver was restarting (its upstream connection
// dropped): the name read is cluster_name "batman". n2's server then
// restarts. Node 4 sees the new run at 0.2s, its walreceiver not started
// yet ("batman"); node 2, n2's own address, finds the new run at 0.21s
// with the walreceiver started ("n2"). The restart recorded at node 4 is
// the one node 2 sees: node 2 must take the row read at 0.001s for the run
// before, whichever name each address read.
func TestRestartRecordedUnderTheClusterNameStillEndsTheOldSyncRowAtTheNamedAddress(t *testing.T) {
	c := syncTrio(t)
	c.SetMembers(at(150), append(members(3), rcMember(4, "10.0.0.4", true)))
	old := replica("n2", 1, 0, 1000) // the run before, its walreceiver restarting
	old.Name = "batman"
	c.CheckOK(4, old, at(160), at(161), "10.0.0.2")
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
			t.Errorf("n2's server restarted (new run seen at node 4 as \"batman\" at 0.2s, then at node 2 as \"n2\" at 0.21s), the master's walsenders last read at 0.001s: node %d (%s) alias of %s, vouched %v, role %s, sync state %q, backSince %s; want no sync role until the master lists the new run",
				x.ID, x.Addr, aliasName(x), x.Vouched, x.Role, x.SyncState, sinceText(x))
		}
	}
}
