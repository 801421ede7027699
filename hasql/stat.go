package hasql

import "time"

// Stat is a snapshot of the Manager's state and counters, as plain values,
// for users without OpenTelemetry.
type Stat struct {
	// Master is the address of the master, "" when there is none.
	Master string
	// SplitBrain reports more than one writable node.
	SplitBrain bool
	// Nodes is one entry per node, in connection string order (or the
	// Discoverer's).
	Nodes []NodeStat
	// Discovery is the state of the Discoverer, if any.
	Discovery DiscoveryStat
}

// NodeStat is one node's state, pool statistics and acquire counters.
type NodeStat struct {
	NodeStatus
	// InUse counts connections of this node's pool acquired and not yet
	// released; Acquires counts acquires from this node's pool and
	// AcquireErrors the failed ones, since the Manager was made.
	InUse         int64
	Acquires      int64
	AcquireErrors int64
	Pool          PoolStat
}

// PoolStat mirrors pgxpool.Stat for one node's pool.
type PoolStat struct {
	TotalConns           int32
	IdleConns            int32
	AcquiredConns        int32
	ConstructingConns    int32
	MaxConns             int32
	AcquireCount         int64
	AcquireDuration      time.Duration
	EmptyAcquireCount    int64
	CanceledAcquireCount int64
	NewConnsCount        int64
}

// Stat returns the Manager's state and counters.
func (m *Manager) Stat() *Stat {
	m.mu.Lock()
	nodes := m.nodes
	st := &Stat{Nodes: make([]NodeStat, len(nodes)), Discovery: m.discoveryStatLocked()}
	for i, n := range nodes {
		st.Nodes[i].NodeStatus = n.statusLocked()
		if st.Nodes[i].SplitBrain {
			st.SplitBrain = true
		}
	}
	m.mu.Unlock()
	if s := m.snap.Load(); s.master != nil {
		st.Master = s.master.cfg.Addr
	}
	for i, n := range nodes {
		ps := n.pool.Stat()
		st.Nodes[i].InUse = int64(ps.AcquiredConns())
		st.Nodes[i].Acquires = ps.AcquireCount()
		st.Nodes[i].AcquireErrors = n.acquireErrs.Load()
		st.Nodes[i].Pool = PoolStat{
			TotalConns:           ps.TotalConns(),
			IdleConns:            ps.IdleConns(),
			AcquiredConns:        ps.AcquiredConns(),
			ConstructingConns:    ps.ConstructingConns(),
			MaxConns:             ps.MaxConns(),
			AcquireCount:         ps.AcquireCount(),
			AcquireDuration:      ps.AcquireDuration(),
			EmptyAcquireCount:    ps.EmptyAcquireCount(),
			CanceledAcquireCount: ps.CanceledAcquireCount(),
			NewConnsCount:        ps.NewConnsCount(),
		}
	}
	return st
}
