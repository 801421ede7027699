package topology

import (
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// The sync replica r crashes and comes back (a new start time): after a
// crash a standby opens for reads at its minimum recovery point, which can
// be behind what it had replayed before. Its first check after the restart
// finds it at 0/320, streaming again; the master, idle at 0/3E8, was last
// checked before the restart, and its walsender row of r (sync, replayed
// up to 0/3E8) is the old process's: r's lag is measured from its own
// position until the master's next check reads the row again (it was
// claimed 0, known, while what r serves is 200 bytes behind).
func TestRestartedReplicaDoesNotTakeItsOldRowsLag(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(2))
	row := checker.Replica{ApplicationName: "r", ClientAddr: "10.0.0.2", State: "streaming", SyncState: "sync", ReplayLSN: 1000, FlushLSN: 1000}
	m := rcWritable("n1", 1, 1000, t0.Add(-time.Hour), row)
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	r := rcReplica("r", 1, 1000, t0.Add(-2*time.Hour), "10.0.0.1")
	c.CheckOK(2, r, at(3), at(4), "10.0.0.2")
	if x := c.Node(2); x.Role != RoleSyncReplica || !x.LagKnown || x.LagBytes != 0 {
		t.Fatalf("setup: r %s lag %d known %v", x.Role, x.LagBytes, x.LagKnown)
	}
	// r crashes and restarts; its check sees it at 0/320.
	r2 := rcReplica("r", 1, 800, t0.Add(100*time.Millisecond), "10.0.0.1")
	c.CheckOK(2, r2, at(200), at(201), "10.0.0.2")
	x := c.Node(2)
	t.Logf("restarted r: role %s, lag %d bytes known %v (r at %s, master at %s)", x.Role, x.LagBytes, x.LagKnown, x.Res.LSN, c.Node(1).Res.LSN)
	if x.Role.IsReplica() && x.LagKnown && x.LagBytes == 0 {
		t.Errorf("r, restarted at 0/320 behind the master's 0/3E8, has lag 0 known (from the walsender row of its run before the restart), role %s", x.Role)
	}
}
