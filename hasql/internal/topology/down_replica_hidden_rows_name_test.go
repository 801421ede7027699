package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// The check user lacks pg_monitor: the master's walsender rows show
// names alone, no address, no sync state, and the replicas' checks do
// not see their walreceivers. A replica of the connection string, named
// n2 in place by the source (Patroni's member name) or by no source (its
// server's name, n2), streams from the master; its checks then fail while
// it streams on. A member nothing vouches for, on another machine or on
// the replica's, says it is n2. The master's one row n2 is as likely the
// replica's as the newcomer's: a row of a name two nodes go by proves
// nothing of the one nothing vouches for, and the replica goes by its
// name while its checks fail. The newcomer serves no reads.
func TestServerNamedLikeADownReplicaServesNoReadsOnRowsThatHideAddresses(t *testing.T) {
	for _, tc := range []struct{ replica, host string }{
		{"n2", "10.0.0.9"},
		{"", "10.0.0.9"},
		{"", "10.0.0.2"},
	} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{
			{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
			{ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Trusted: true},
			{ID: 3, Addr: tc.host + ":5433", Host: tc.host},
		})
		m := master(1, 1000)
		m.Replicas = []checker.Replica{{ApplicationName: "n2", State: "streaming"}}
		c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
		c.CheckOK(2, hiddenReplica("n2", t0.Add(20*time.Second)), at(3), at(4), "10.0.0.2")
		c.TakeReady()
		if x := c.Node(2); !x.Role.IsReplica() {
			t.Fatalf("%+v: setup: n2 role %s (%s)", tc, x.Role, x.Detached)
		}
		if tc.replica != "" {
			// The source's first answer, later than the first checks.
			c.SetMembers(at(500), []Member{
				{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Name: "n1", Trusted: true},
				{ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Name: tc.replica, Trusted: true},
				{ID: 3, Addr: tc.host + ":5433", Host: tc.host},
			})
		}
		for round := 1; round < 4; round++ {
			base := 1000 * round
			c.CheckOK(1, m, at(base+1), at(base+2), "10.0.0.1")
			c.CheckFailed(2, errors.New("connection refused"), false, at(base+3))
			c.CheckOK(3, hiddenReplica("n2", t0.Add(40*time.Second)), at(base+3), at(base+4), tc.host)
		}
		c.TakeReady()
		if e := c.Elected().Master; e == nil || e.ID != 1 {
			t.Fatalf("%+v: master %+v", tc, c.Elected())
		}
		if x := c.Node(3); x.Role.IsReplica() || x.Vouched {
			t.Errorf("replica's member named %q, the newcomer on %s: the newcomer took the row n2 of the down replica and serves reads: role %s, vouched %v",
				tc.replica, tc.host, x.Role, x.Vouched)
		}
	}
}
