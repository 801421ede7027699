package hasql

// PoisonedConns is how many connections of every node are marked to be
// closed on release (see node.poison).
func PoisonedConns(m *Manager) int64 {
	var k int64
	for _, n := range m.nodes {
		k += n.nPoisoned.Load()
	}
	return k
}

// InUse is every node's in-use count, the one the balancers read, by
// address.
func InUse(m *Manager) map[string]int64 {
	out := map[string]int64{}
	for _, n := range m.nodesNow() {
		out[n.cfg.Addr] = n.inUse.Load()
	}
	return out
}
