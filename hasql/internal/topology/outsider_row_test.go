package topology

import (
	"testing"

	"github.com/pgxha/pgxha/checker"
)

// n3, named by the user, cascades from 10.0.0.9, a standby outside the set
// whose walreceiver goes by n3's name (Debian's shared cluster_name). The
// master lists one row of that name, from 10.0.0.9, sync: it is taken for
// n3's, though n3's own check says its walreceiver streams from 10.0.0.9,
// not from the master, and the row comes from another address. A replica
// that cascades is never waited for: sync was claimed on a guess. The row
// may be x's own behind a virtual address and NAT too: sync is unknown.
func TestOutsiderRowNotTakenForCascadingReplica(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	m := master(1, 1000, "n2")
	m.Replicas = append(m.Replicas, checker.Replica{ApplicationName: "n3", SyncState: "sync", ClientAddr: "10.0.0.9", State: "streaming",
		SentLSN: 1000, FlushLSN: 1000, ReplayLSN: 1000})
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 1000), at(3), at(4), "10.0.0.2")
	r3 := replica("n3", 1, 1, 1000)
	r3.UpstreamHost, r3.UpstreamPort = "10.0.0.9", 5432
	r3.StartTime = at(-7000) // another server than n2 (replica() gives names of one length one start time)
	c.CheckOK(3, r3, at(3), at(4), "10.0.0.3")
	c.TakeReady()
	t.Logf("n3: role %s sync %q detached %q unknown %q", c.Node(3).Role, c.Node(3).SyncState, c.Node(3).Detached, c.Node(3).SyncUnknown)
	if x := c.Node(3); x.Role != RoleReplica || x.SyncUnknown == "" {
		t.Fatalf("n3 streams from 10.0.0.9, outside the set, and the master's row of its name comes from 10.0.0.9: role %s, sync state %q", x.Role, x.SyncState)
	}

	// Streaming from the master's own address, the row is its own even
	// from another address (NAT): sync.
	r3.UpstreamHost, r3.UpstreamPort = "10.0.0.1", 5432
	c.CheckOK(3, r3, at(5), at(6), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(3); x.Role != RoleSyncReplica {
		t.Fatalf("n3 streams from the master: role %s, unknown %q", x.Role, x.SyncUnknown)
	}
}

// Servers that share a host (instances side by side, a proxy or a
// forwarded port in front of the master): the rows' addresses, the host's,
// tell no standby from another. A replica that streams from the port the
// master says it listens on streams from the master, though the set names
// the master by another port; one that streams from another port of that
// host streams from another server, and the master's row of its name is
// not surely its own.
func TestRowOfAReplicaBesideTheMaster(t *testing.T) {
	c := New(Config{})
	c.SetMembers(at(0), members(3))
	m := master(1, 1000, "n2")
	m.ServerPort = 6432 // the set reaches it through 5432
	m.Replicas = append(m.Replicas, checker.Replica{ApplicationName: "n3", SyncState: "sync", ClientAddr: "10.0.0.3", State: "streaming",
		SentLSN: 1000, FlushLSN: 1000, ReplayLSN: 1000})
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	c.CheckOK(2, replica("n2", 1, 1, 1000), at(3), at(4), "10.0.0.2")
	r3 := replica("n3", 1, 1, 1000)
	r3.StartTime = at(-7000)
	r3.UpstreamHost, r3.UpstreamPort = "10.0.0.1", 6432
	c.CheckOK(3, r3, at(3), at(4), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(3); x.Role != RoleSyncReplica {
		t.Fatalf("n3 streams from the master's own port: role %s, unknown %q", x.Role, x.SyncUnknown)
	}
	r3.UpstreamPort = 5433 // another server on the master's host
	c.CheckOK(3, r3, at(5), at(6), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(3); x.Role != RoleReplica || x.SyncUnknown == "" {
		t.Fatalf("n3 streams from another server beside the master: role %s, sync state %q", x.Role, x.SyncState)
	}
}
