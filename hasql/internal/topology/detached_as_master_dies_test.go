package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// The master crashes: its walsenders end, and the replica's walreceiver
// may see it before the Manager does. A check of the master that still
// answers then lists no walsender for the replica, which is detached
// for that moment; the master's next check fails. With no master, the
// replica that stopped following only as the master went down serves
// reads as one still listed would (masterless reads). One detached long
// before the master went down stays detached.
func TestReplicaDetachedAsTheMasterDiesServesReads(t *testing.T) {
	for _, tc := range []struct {
		name   string
		lastOK int // ms: the master's last check that answers, listing nobody since 500
		want   Role
	}{
		{"as the master dies", 1000, RoleReplica},
		{"long before", 6000, RoleDetached},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Config{})
			c.SetMembers(at(0), members(2))
			start1, start2 := t0.Add(-time.Hour), t0.Add(-2*time.Hour)
			row := checker.Replica{ApplicationName: "n2", SyncState: "async", ClientAddr: "10.0.0.2", State: "streaming", ReplayLSN: 1000}
			c.CheckOK(2, rcReplica("n2", 1, 1000, start2, "10.0.0.1"), at(1), at(2), "10.0.0.2")
			c.CheckOK(1, rcWritable("n1", 1, 1000, start1, row), at(3), at(4), "10.0.0.1")
			c.TakeReady()
			if x := c.Node(2); x.Role != RoleAsyncReplica {
				t.Fatalf("setup: n2 role %s (%s), want async", x.Role, x.Detached)
			}
			// The walreceiver is gone; the master, still answering, lists
			// nobody.
			noRecv := rcReplica("n2", 1, 1000, start2, "")
			noRecv.ReceiveTimeline, noRecv.UpstreamPort = 0, 0
			c.CheckOK(2, noRecv, at(500), at(501), "10.0.0.2")
			for ms := 500; ms <= tc.lastOK; ms += 500 {
				c.CheckOK(1, rcWritable("n1", 1, 1000, start1), at(ms+2), at(ms+3), "10.0.0.1")
				c.TakeReady()
				if x := c.Node(2); x.Role != RoleDetached {
					t.Fatalf("n2 not listed by a master that answers: role %s, want detached", x.Role)
				}
			}
			c.CheckFailed(1, errors.New("connection refused"), false, at(tc.lastOK+500))
			c.CheckOK(2, noRecv, at(tc.lastOK+510), at(tc.lastOK+511), "10.0.0.2")
			c.TakeReady()
			x := c.Node(2)
			if m := c.Elected().Master; m != nil {
				t.Fatalf("master %s after n1 went down", m.Addr)
			}
			if x.Role != tc.want {
				t.Fatalf("n2 with the master down: role %s (%s), want %s", x.Role, x.Detached, tc.want)
			}
			if tc.want == RoleReplica && (x.SyncState != "" || x.LagKnown) {
				t.Fatalf("n2 serving reads with no master: sync state %q, lag known %v; want neither", x.SyncState, x.LagKnown)
			}
		})
	}
}
