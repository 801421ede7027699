package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// The master (named by the connection string) lists its sync standby n2,
// streaming from 10.0.0.2. The source lists n2 at 10.0.0.2:5432, which the
// Manager cannot check (its checks fail: a pg_hba rule, a full
// max_connections, a partition between the Manager and n2 alone), and a
// second member at 10.0.0.2:5433, named n9, which nothing vouches for: a
// server on n2's machine that says it is a replica streaming from the
// master as "n2". Its own word is all that says so; the row is n2's. It
// must not be vouched for nor called sync (SyncOnly reads would go to it).
func TestServerBesideAReplicaTakesNoRowByTheNameItClaims(t *testing.T) {
	checkBesideDownReplica(t, "n9", "10.0.0.2")
}

// As TestServerBesideAReplicaTakesNoRowByTheNameItClaims, but the second
// member has no name of its own (a source that lists addresses only): its
// name is its server's word. The member the source named n2 goes by n2
// while its checks fail, whether the rows show addresses or not.
func TestUnnamedServerBesideAReplicaTakesNoRowByTheNameItClaims(t *testing.T) {
	t.Run("addresses shown", func(t *testing.T) { checkBesideDownReplica(t, "", "10.0.0.2") })
	t.Run("addresses hidden", func(t *testing.T) { checkBesideDownReplica(t, "", "") })
}

// checkBesideDownReplica checks the member at 10.0.0.2:5433, named name
// by the source, whose server says "n2" beside the member n2 whose checks
// fail, the master's row of n2 showing client address addr ("": the check
// user lacks pg_monitor, no sync state shown either).
func checkBesideDownReplica(t *testing.T, name, addr string) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{
		{ID: 1, Addr: "10.0.0.1:5432", Host: "10.0.0.1", Trusted: true},
		{ID: 2, Addr: "10.0.0.2:5432", Host: "10.0.0.2", Name: "n2"},
		{ID: 3, Addr: "10.0.0.2:5433", Host: "10.0.0.2", Name: name},
	})
	m := master(1, 100)
	row := checker.Replica{ApplicationName: "n2", ClientAddr: addr, State: "streaming"}
	if addr != "" {
		row.SyncState = "sync"
	}
	m.Replicas = []checker.Replica{row}
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
	t.Logf("node 3 (10.0.0.2:5433, member %q, says n2): role %s sync %q unknown %q detached %q vouched %v", name, x.Role, x.SyncState, x.SyncUnknown, x.Detached, x.Vouched)
	if x.Role == RoleSyncReplica || x.Vouched || x.Detached == "" {
		t.Errorf("a server nothing vouches for took n2's walsender row by the name it claims: role %s, vouched %v", x.Role, x.Vouched)
	}
}
