package topology

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// Replica n2, a host of the connection string, is reached at 192.0.2.2
// and streams from the master over a replication network: the master's
// walsender row n2, sync, comes from 10.0.0.2, the same machine's address
// there (see TestReplicaSharingTheMastersHostFollowsItThroughAnotherAddress).
// The source lists another member at 10.0.0.2:5433: a server nothing
// vouches for that says it is a replica named r, one of another cluster,
// one whose checks fail after the first, or a replica of the connection
// string that streams as r. None of them goes by n2: the row is not
// theirs, and n2 stays the sync replica it is. A member whose server
// says n2 while nothing vouches for it may own the row: n2 stays a
// replica, its sync state unknown. In no case is n2 detached.
func TestMemberAtTheAddressAReplicaStreamsFromTakesNoRowOfAnotherName(t *testing.T) {
	for _, kind := range []string{"unvouched", "foreign", "down", "trusted", "unvouched namesake"} {
		c := New(Config{})
		c.SetMembers(at(0), []Member{
			{ID: 1, Addr: "192.0.2.1:5432", Host: "192.0.2.1", Trusted: true},
			{ID: 2, Addr: "192.0.2.2:5432", Host: "192.0.2.2", Trusted: true},
			{ID: 3, Addr: "10.0.0.2:5433", Host: "10.0.0.2", Trusted: kind == "trusted"},
		})
		rows := []checker.Replica{{ApplicationName: "n2", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "sync", ReplayLSN: 1000}}
		other := rcReplica("r", 1, 1000, t0.Add(-5*time.Hour), "10.0.0.1")
		switch kind {
		case "foreign":
			other.SystemID = 77
		case "unvouched namesake":
			other.Name = "n2"
		}
		for k := 0; k < 3; k++ {
			ms := 1000 * k
			c.CheckOK(1, rcWritable("n1", 1, 1000, t0.Add(-time.Hour), rows...), at(ms+1), at(ms+2), "192.0.2.1")
			c.CheckOK(2, rcReplica("n2", 1, 1000, t0.Add(-2*time.Hour), "10.0.0.1"), at(ms+3), at(ms+4), "192.0.2.2")
			if kind == "down" && k > 0 {
				c.CheckFailed(3, errors.New("connection refused"), false, at(ms+4))
			} else {
				c.CheckOK(3, other, at(ms+3), at(ms+4), "10.0.0.2")
			}
		}
		c.TakeReady()
		if m := c.Elected().Master; m == nil || m.ID != 1 {
			t.Fatalf("%s: master %+v", kind, c.Elected())
		}
		x := c.Node(2)
		switch {
		case !x.Role.IsReplica():
			t.Errorf("%s member at the address n2 streams from: n2 is %s (%s); want it a replica", kind, x.Role, x.Detached)
		case kind != "unvouched namesake" && x.Role != RoleSyncReplica:
			t.Errorf("%s member at the address n2 streams from, going by another name: n2 is %s (%s); want sync", kind, x.Role, x.SyncUnknown)
		case kind == "unvouched namesake" && x.Role == RoleSyncReplica:
			t.Errorf("a member nothing vouches for says n2 at the address the row comes from: n2 is sync; want its sync state unknown")
		case kind == "unvouched namesake" && !strings.Contains(x.SyncUnknown, "10.0.0.2"):
			t.Errorf("n2's sync state unknown: %q; want it to name the address the row comes from", x.SyncUnknown)
		}
	}
}
