package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// As TestServerBesideAReplicaTakesNoRowByTheNameItClaims, but the second
// member on n2's machine has no name of its own (a source that lists
// addresses only, a DNS name's records): its name is its server's word.
// The master's row "n2" is the member n2's, whose checks fail; the server
// that says "n2" must not take it, whether the rows show addresses or not.
func TestUnnamedServerBesideAReplicaTakesNoRowByTheNameItClaims(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr string
	}{{"addresses shown", "10.0.0.2"}, {"addresses hidden", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Config{})
			c.SetMembers(at(0), []Member{
				{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
				{ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Name: "n2"},
				{ID: 3, Addr: "10.0.0.2:5433", Host: "10.0.0.2"},
			})
			m := master(1, 100)
			state := "sync"
			if tc.addr == "" {
				state = ""
			}
			m.Replicas = []checker.Replica{{ApplicationName: "n2", SyncState: state, ClientAddr: tc.addr, State: "streaming"}}
			rogue := replica("n2", 1, 1, 100)
			rogue.StartTime = t0.Add(40 * time.Second)
			rogue.UpstreamHost, rogue.UpstreamPort = "10.0.0.1", 5432
			for round := 0; round < 3; round++ {
				base := 1000 * round
				c.CheckOK(1, m, at(base+1), at(base+2), "10.0.0.1")
				c.CheckFailed(2, errors.New("connection refused"), false, at(base+3))
				c.CheckOK(3, rogue, at(base+3), at(base+4), "10.0.0.2")
			}
			c.TakeReady()
			if e := c.Elected().Master; e == nil || e.ID != 1 {
				t.Fatalf("master %+v", c.Elected())
			}
			x := c.Node(3)
			t.Logf("node 3 (10.0.0.2:5433, no member name, says n2): role %s sync %q unknown %q detached %q vouched %v", x.Role, x.SyncState, x.SyncUnknown, x.Detached, x.Vouched)
			if x.Role == RoleSyncReplica || x.Vouched {
				t.Errorf("a server nothing vouches for took n2's walsender row by the name it claims: role %s, vouched %v", x.Role, x.Vouched)
			}
		})
	}
}
