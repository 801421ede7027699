package hasql

import (
	"context"
	"slices"
	"testing"
)

// While the master's connections are cut, the snapshot stored names no
// master and leaves it out of every set: with MasterReadWeight the master
// is in the read set too, and a read that loaded that snapshot must not
// pick it there (a connection dialed to it after the cut would pass its
// re-validation against the same snapshot).
func TestMasterlessSnapshotLeavesTheMasterOutOfEverySet(t *testing.T) {
	m, err := New(context.Background(), "postgres://u@127.0.0.1:1,127.0.0.1:2/db?hasql_check_timeout=200ms")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.mu.Lock()
	n1, n2 := m.nodes[0], m.nodes[1]
	m.mu.Unlock()
	old := &snapshot{master: n1, changed: make(chan struct{})}
	old.sets[setMaster] = m.buildSet([]*node{n1}, nil)
	old.sets[setReplicas] = m.buildSet([]*node{n2, n1}, nil) // the master reads with MasterReadWeight
	old.sets[setAllReplicas] = m.buildSet([]*node{n2}, nil)

	s := m.masterless(old)
	if s.master != nil {
		t.Fatalf("the masterless snapshot names %s master", s.master.cfg.Addr)
	}
	for i, set := range s.sets {
		if slices.Contains(set.nodes, n1) {
			t.Errorf("set %d still holds the master whose connections are cut", i)
		}
	}
	if got := s.sets[setReplicas].nodes; len(got) != 1 || got[0] != n2 {
		t.Errorf("the read set is %v, want the replica alone", got)
	}
	for range 20 {
		set, err := m.candidates(s, targetReplica, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if set.nodes[set.pick()] == n1 {
			t.Fatal("a read picked the master whose connections are cut")
		}
	}
	if len(old.sets[setReplicas].nodes) != 2 {
		t.Error("the snapshot before was changed")
	}
}
