package topology

import (
	"errors"
	"testing"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// TestHiddenReceiverStreamingFromAStaleMasterIsNotAReplicaOfTheMaster: the
// check user is the replication role (no pg_read_all_stats): a master's
// walsender rows show names and client addresses, no sync state; a
// replica's walreceiver shows its pid alone (ReceiverHidden), its Timeline
// is its control data's.
//
// How PostgreSQL gets there: n1 (timeline 1) crashes, n2 is promoted to
// timeline 2. n1 is restarted by its service manager and comes back
// writable on timeline 1 (a crashed primary restarts as a primary). n3's
// primary_conninfo still names n1 (the failover tool had not repointed it
// yet, or could not reach it): its walreceiver reconnects to n1 and
// streams timeline 1 from it, and n1's walsenders list "n3" from
// 10.0.0.3. On n3's host a backup's pg_receivewal (barman receive-wal)
// runs as the replication role against the primary's service address,
// which now reaches n2: n2's only row from 10.0.0.3 is pg_receivewal's.
//
// n3 follows n1's branch of timeline 1, not n2: it must not serve reads as
// n2's replica. The one row from its host under another client's name
// proves nothing here, all the less since a writable node of the set (n1)
// lists n3 by its own name from its own address.
func TestHiddenReceiverStreamingFromAStaleMasterIsNotAReplicaOfTheMaster(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), []Member{rcMember(1, "10.0.0.1", true), rcMember(2, "10.0.0.2", true), rcMember(3, "10.0.0.3", true)})
	s1, s2, s3 := t0.Add(-time.Hour), t0.Add(-2*time.Hour), t0.Add(-3*time.Hour)
	hidden := func(name string, tl uint32, lsn checker.LSN, start time.Time) checker.Result {
		r := rcReplica(name, tl, lsn, start, "")
		r.ReceiveTimeline, r.UpstreamPort, r.ReceiverHidden = 0, 0, true
		return r
	}
	ms := 0
	round := rounds(&ms)
	rows1 := []checker.Replica{{ApplicationName: "n2", ClientAddr: "10.0.0.2"}, {ApplicationName: "n3", ClientAddr: "10.0.0.3"}}
	round(func() {
		c.CheckOK(1, rcWritable("n1", 1, 1000, s1, rows1...), at(ms+1), at(ms+2), "10.0.0.1")
	}, func() {
		c.CheckOK(2, hidden("n2", 1, 1000, s2), at(ms+3), at(ms+4), "10.0.0.2")
	}, func() {
		c.CheckOK(3, hidden("n3", 1, 1000, s3), at(ms+5), at(ms+6), "10.0.0.3")
	})
	if m := c.Elected().Master; m == nil || m.ID != 1 {
		t.Fatalf("setup: n1 must be master: %+v", c.Elected())
	}
	if x := c.Node(3); !x.Role.IsReplica() {
		t.Fatalf("setup: n3 must be a replica of n1: %v %q", x.Role, x.Detached)
	}
	// n1 crashes; n2 is promoted to timeline 2 and writes on.
	c.CheckFailed(1, errors.New("connection refused"), false, at(ms+1))
	ms += 10
	rows2 := []checker.Replica{{ApplicationName: "pg_receivewal", ClientAddr: "10.0.0.3"}}
	round(func() {
		c.CheckOK(2, rcWritable("n2", 2, 5000, s2, rows2...), at(ms+3), at(ms+4), "10.0.0.2")
	}, func() {
		c.CheckOK(3, hidden("n3", 1, 1000, s3), at(ms+5), at(ms+6), "10.0.0.3")
	})
	if m := c.Elected().Master; m == nil || m.ID != 2 {
		t.Fatalf("setup: n2 must be master after its promotion: %+v", c.Elected())
	}
	// n1 restarts writable on timeline 1; n3's walreceiver streams from it.
	s1b := t0.Add(time.Second)
	rows1b := []checker.Replica{{ApplicationName: "n3", ClientAddr: "10.0.0.3"}}
	round(func() {
		c.CheckOK(1, rcWritable("n1", 1, 1200, s1b, rows1b...), at(ms+1), at(ms+2), "10.0.0.1")
	}, func() {
		c.CheckOK(2, rcWritable("n2", 2, 5000+checker.LSN(ms), s2, rows2...), at(ms+3), at(ms+4), "10.0.0.2")
	}, func() {
		c.CheckOK(3, hidden("n3", 1, 1200, s3), at(ms+5), at(ms+6), "10.0.0.3")
	})
	if m := c.Elected().Master; m == nil || m.ID != 2 {
		t.Fatalf("n2 must stay master: %+v", c.Elected())
	}
	if x := c.Node(1); x.Role != RoleStaleMaster {
		t.Fatalf("setup: n1, writable on timeline 1, must be stale: %v", x.Role)
	}
	if x := c.Node(3); x.Role != RoleDetached {
		t.Errorf("n3 streams timeline 1 from the stale n1 (listed by n1 as n3 from its address); "+
			"n2's only row from its host is pg_receivewal's: n3 is %v (lag %d bytes, known %v), want detached",
			x.Role, x.LagBytes, x.LagKnown)
	}
}
