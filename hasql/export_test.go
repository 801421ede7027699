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
