package hasql

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// Connection lifetime (PoolConfig.MaxConnLifetime and
// MaxConnLifetimeJitter) is kept by the node, not by pgxpool. pgxpool
// reads the clock twice per acquire and release to test it (isExpired on
// acquire and on release); the node gives each connection its end when it
// connects and looks at the ends once per check:
//
//   - a connection past its end that is idle is taken from the pool and
//     closed (expireConns), as pgxpool's health check closes it;
//   - one in use is closed when it is released (nodeTracer.TraceRelease),
//     and one that an acquire takes between the look and the sweep is
//     closed before it is handed out (the ShouldPing hook: the ping fails,
//     and pgxpool takes the next connection);
//   - a connection is never cut while in use for its lifetime.
//
// What is kept per acquire is one atomic load (nExpired), which is zero
// but from when a connection's end was found to when it was closed. The
// end is found at the first check after it, so a connection lives for up
// to one check interval longer than MaxConnLifetime (plus its jitter).

// monoBase is the origin of monoNow.
var monoBase = time.Now()

// monoNow is the monotonic clock in nanoseconds since monoBase.
func monoNow() int64 { return int64(time.Since(monoBase)) }

// setEnd gives a connection of n's pool that just connected its end of
// life.
func (n *node) setEnd(tc *trackedConn) {
	if n.lifetime <= 0 {
		return
	}
	d := n.lifetime
	if n.lifetimeJitter > 0 {
		d += rand.N(n.lifetimeJitter)
	}
	tc.ends.Store(monoNow() + int64(d))
}

// flagExpired marks the connections whose end has come by now, and
// returns how many it marked. A marked connection counts in n.nExpired
// until it closes (see trackedConn.Close).
func (r *connRegistry) flagExpired(now int64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := 0
	for c := range r.conns {
		if e := c.ends.Load(); e != 0 && e <= now && c.live.Load() && !c.expired.Load() {
			c.expired.Store(true)
			k++
		}
	}
	if k > 0 {
		r.n.nExpired.Add(int64(k))
	}
	return k
}

// expireConns runs after each check: it marks the connections whose end
// has come, and closes those of them that are idle by taking every idle
// connection from the pool and giving it back (the release closes a
// marked one, and the pool destroys it and makes up MinConns).
func (n *node) expireConns() {
	if n.lifetime <= 0 || n.conns.flagExpired(monoNow()) == 0 {
		return
	}
	idle := n.pool.AcquireAllIdle(n.ctx)
	n.inUse.Add(int64(len(idle))) // given back by each release
	for _, c := range idle {
		c.Release()
	}
}

// closeIfExpired closes conn if its end has come, and reports whether it
// did. Only called while n.nExpired > 0.
func closeIfExpired(conn *pgx.Conn) bool {
	tc := trackedOf(conn)
	if tc == nil || !tc.expired.Load() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	conn.Close(ctx)
	cancel()
	return true
}
