package topology

import (
	"errors"
	"testing"
)

// patroniTrio: Patroni-style members, each named (Member.Name, the
// application_name Patroni writes into primary_conninfo), every server
// sharing one cluster_name (Patroni's scope, "batman"): a replica's name is
// its member name while its walreceiver runs, the scope while none does.
// The master lists n2 sync, n3 async; n2 started long before n3.
func patroniTrio(t *testing.T) *Core {
	t.Helper()
	c := New(Config{})
	ms := members(3)
	ms[0].Name, ms[1].Name, ms[2].Name = "n1", "n2", "n3"
	c.SetMembers(at(0), ms)
	m := master(1, 1000, "n2", "n3")
	m.Replicas[0].SyncState = "sync"
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	r2 := replica("n2", 1, 1, 1000)
	r2.StartTime = at(-9000)
	c.CheckOK(2, r2, at(3), at(4), "10.0.0.2")
	r3 := replica("n3", 1, 1, 1000)
	r3.StartTime = at(-7000)
	c.CheckOK(3, r3, at(3), at(4), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica || x.SyncState != "sync" {
		t.Fatalf("setup: node 2 role %s sync state %q, want sync", x.Role, x.SyncState)
	}
	return c
}

// The master goes out of sight; both replicas' walreceivers stop, so both
// show the scope as their name. Node 2 is the server the last master
// called sync: PreferMaster's first choice. Then node 3's server restarts
// (Patroni restarts a replica: a parameter change, a crash). Node 2's
// server did not restart, went down at no address: it must stay the
// server the last master called sync. A server of another member that
// shares only the cluster_name is not node 2's server after a restart.
func TestLastSyncKeptWhenAnotherMemberSharingTheClusterNameRestarts(t *testing.T) {
	c := patroniTrio(t)
	c.CheckFailed(1, errors.New("connection refused"), false, at(100))
	r2 := replica("batman", 1, 0, 1000)
	r2.StartTime = at(-9000)
	c.CheckOK(2, r2, at(110), at(111), "10.0.0.2")
	r3 := replica("batman", 1, 0, 1000)
	r3.StartTime = at(-7000)
	c.CheckOK(3, r3, at(110), at(111), "10.0.0.3")
	c.TakeReady()
	if ids := lastSyncNodes(c); len(ids) != 1 || ids[0] != 2 {
		t.Fatalf("setup: last sync nodes %v, want [2]", ids)
	}
	r3.StartTime = at(150) // node 3's server restarted
	c.CheckOK(3, r3, at(200), at(201), "10.0.0.3")
	c.TakeReady()
	if ids := lastSyncNodes(c); len(ids) != 1 || ids[0] != 2 {
		x := c.Node(2)
		t.Fatalf("node 3's server (member n3) restarted at 0.15s; node 2's (member n2, started at -9s) did not: last sync nodes %v; node 2 role %s, sync state %q, backSince %s; want [2]",
			ids, x.Role, x.SyncState, sinceText(x))
	}
}

// The same with the master in sight: node 2's walreceiver reconnecting
// (it shows the scope for a moment) when node 3's server restarts with its
// walreceiver not started yet. The master's rows, read before, call node
// 2's server, which did not restart, sync: node 2 stays sync.
func TestSyncKeptWhenAnotherMemberSharingTheClusterNameRestarts(t *testing.T) {
	c := patroniTrio(t)
	r2 := replica("batman", 1, 0, 1000)
	r2.StartTime = at(-9000)
	c.CheckOK(2, r2, at(110), at(111), "10.0.0.2")
	m := master(1, 1000, "n2", "n3")
	m.Replicas[0].SyncState = "sync"
	c.CheckOK(1, m, at(120), at(121), "10.0.0.1")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica {
		t.Fatalf("setup: node 2 role %s, want sync", x.Role)
	}
	r3 := replica("batman", 1, 0, 1000)
	r3.StartTime = at(150)
	c.CheckOK(3, r3, at(200), at(201), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica {
		t.Fatalf("node 3's server (member n3) restarted at 0.15s; node 2's did not and the master's rows read at 0.12s call it sync: node 2 role %s, sync state %q, sync unknown %q, backSince %s; want sync",
			x.Role, x.SyncState, x.SyncUnknown, sinceText(x))
	}
}

// Replicas named by the Manager (WithReplicaName: Member.Name) while every
// walreceiver goes by PostgreSQL's fallback application_name
// "walreceiver" (primary_conninfo sets none, cluster_name unset): the
// master's rows tell them apart by client address. Node 2 is sync; node
// 3's server restarts and streams again. Node 2's server did not restart:
// it stays sync on the master's rows, read after its last return.
func TestSyncKeptWhenAnotherReplicaStreamingUnderTheFallbackNameRestarts(t *testing.T) {
	c := New(Config{})
	ms := members(3)
	ms[1].Name, ms[2].Name = "n2", "n3"
	c.SetMembers(at(0), ms)
	m := master(1, 1000, "n2", "n3")
	m.Replicas[0].ApplicationName, m.Replicas[1].ApplicationName = "walreceiver", "walreceiver"
	m.Replicas[0].SyncState = "sync"
	c.CheckOK(1, m, at(1), at(2), "10.0.0.1")
	r2 := replica("walreceiver", 1, 1, 1000)
	r2.StartTime = at(-9000)
	c.CheckOK(2, r2, at(3), at(4), "10.0.0.2")
	r3 := replica("walreceiver", 1, 1, 1000)
	r3.StartTime = at(-7000)
	c.CheckOK(3, r3, at(3), at(4), "10.0.0.3")
	c.CheckOK(1, m, at(10), at(11), "10.0.0.1")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica {
		t.Fatalf("setup: node 2 role %s sync unknown %q, want sync", x.Role, x.SyncUnknown)
	}
	r3.StartTime = at(150)
	c.CheckOK(3, r3, at(200), at(201), "10.0.0.3")
	c.TakeReady()
	if x := c.Node(2); x.Role != RoleSyncReplica {
		t.Fatalf("node 3's server restarted at 0.15s; node 2's did not and the master's rows read at 0.01s call it sync: node 2 role %s, sync state %q, sync unknown %q, backSince %s; want sync",
			x.Role, x.SyncState, x.SyncUnknown, sinceText(x))
	}
}
