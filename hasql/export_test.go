package hasql

import (
	"time"

	"github.com/jackc/pgx/v5"
)

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

// AuthGate is the per-node gate of connects after the server refused the
// credentials (see authGate), for its tests.
type AuthGate struct{ g authGate }

func (a *AuthGate) Allow(now time.Time) error { return a.g.allow("n1:5432", now) }
func (a *AuthGate) Failed(err error, now time.Time) (bool, string, time.Time) {
	return a.g.failed(err, now)
}
func (a *AuthGate) Succeeded() bool { return a.g.succeeded() }

// ExpiredConns is how many connections of every node are past their
// lifetime and not yet closed (see markExpired).
func ExpiredConns(m *Manager) int64 {
	var k int64
	for _, n := range m.nodesNow() {
		k += n.nExpired.Load()
	}
	return k
}

// EndConn brings the end of conn's lifetime to now: the node's next check
// marks it past its end, as it does a connection whose end came on its
// own. False when conn is none of a node's pool.
func EndConn(conn *pgx.Conn) bool {
	tc := trackedOf(conn)
	if tc == nil || tc.ends.Load() == 0 {
		return false
	}
	tc.ends.Store(monoNow())
	return true
}

// LifetimeByNode reports whether the nodes keep their pools' connection
// lifetime (the pgx built with takes a MaxConnLifetime of 0 for none).
func LifetimeByNode() bool { return pgxKeepsNoLifetime() }

// VersionAtLeast is versionAtLeast, for its test.
func VersionAtLeast(v string, major, minor, patch int) bool {
	return versionAtLeast(v, major, minor, patch)
}
