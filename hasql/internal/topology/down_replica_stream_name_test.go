package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// A replica of the connection string (n2, at 10.0.0.2:5432) streams from
// the master as n2, sync; its checks then fail (a pg_hba rule, a full
// max_connections, a partition between the Manager and n2 alone) while
// it streams on. Its member goes by no name the source gave (the source
// has not named it: a discoverer of addresses only, or its first answer
// still to come) or by one that is not what its server streams as (the
// source behind). The source lists a second member on n2's machine
// (10.0.0.2:5433), which nothing vouches for, whose server says it is a
// replica streaming from the master as "n2". The master's row n2 comes
// from that machine: the replica's last check showed it streaming as n2,
// so the row is as likely its as the newcomer's. The newcomer must not be
// vouched for by it nor called sync (SyncOnly reads would go to it).
func TestServerBesideADownReplicaTakesNoRowByTheNameTheReplicaStreamedAs(t *testing.T) {
	for _, tc := range []struct{ replica, beside, addr string }{
		{"", "", "10.0.0.2"},
		{"", "n2", "10.0.0.2"},
		{"n7", "", "10.0.0.2"},
		{"n7", "n2", "10.0.0.2"},
		{"", "", ""},
		{"n7", "n2", ""},
	} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{
			{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
			{ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Name: tc.replica, Trusted: true},
			{ID: 3, Addr: "10.0.0.2:5433", Host: "10.0.0.2", Name: tc.beside},
		})
		m := master(1, 100)
		row := checker.Replica{ApplicationName: "n2", ClientAddr: tc.addr, State: "streaming"}
		if tc.addr != "" {
			row.SyncState = "sync"
		}
		m.Replicas = []checker.Replica{row}
		n2 := replica("n2", 1, 1, 100)
		n2.StartTime = t0.Add(20 * time.Second)
		n2.UpstreamHost, n2.UpstreamPort = "10.0.0.1", 5432
		other := n2
		other.StartTime = t0.Add(40 * time.Second)
		c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
		c.CheckOK(2, n2, at(3), at(4), "10.0.0.2")
		for round := 1; round < 4; round++ {
			base := 1000 * round
			c.CheckOK(1, m, at(base+1), at(base+2), "10.0.0.1")
			c.CheckFailed(2, errors.New("connection refused"), false, at(base+3))
			c.CheckOK(3, other, at(base+3), at(base+4), "10.0.0.2")
		}
		c.TakeReady()
		if e := c.Elected().Master; e == nil || e.ID != 1 {
			t.Fatalf("%+v: master %+v", tc, c.Elected())
		}
		x := c.Node(3)
		if x.Role == RoleSyncReplica || x.Vouched || x.Detached == "" {
			t.Errorf("replica's member named %q, the server beside it %q, rows from %q: the server beside the down replica took the row n2 the replica streamed as: role %s, sync %q, vouched %v",
				tc.replica, tc.beside, tc.addr, x.Role, x.SyncState, x.Vouched)
		}
	}
}
