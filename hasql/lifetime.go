package hasql

import (
	"context"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Connection lifetime (PoolConfig.MaxConnLifetime and
// MaxConnLifetimeJitter) is kept by the node, not by pgxpool, which would
// read the clock for it on every acquire and every release. A connection
// gets its end when it connects; after each check the node marks the
// connections past their end (markExpired), and
//
//   - a marked connection is closed when it is released (the release hook,
//     nodeTracer.TraceRelease), and pgxpool destroys it;
//   - an acquire that comes to a marked idle connection closes it instead
//     of handing it out (the ShouldPing hook: the ping fails, and pgxpool
//     takes the next connection or makes one);
//   - a connection in use is never cut for its lifetime.
//
// Both run the pool's BeforeClose on the connection while it is still open
// (closeNow), once. An idle connection past its end is not closed until an
// acquire comes to it or pool_max_conn_idle_time closes it: taking the idle
// connections out of the pool to close them (pgxpool.AcquireAllIdle) would
// run the user's PrepareConn outside an acquire and restart every idle
// connection's idle time. What is kept per acquire and release is one
// atomic load (nExpired), which is zero but while a marked connection is
// open. The end is found at the first check after it: a connection may be
// handed out up to a check interval past it.
//
// pgx before v5.13 takes a MaxConnLifetime of 0 for "expired at once", not
// "never": under it (or a version the build does not say) pgxpool keeps
// the lifetime, as under a ConnConfig.AfterNetConnect of the user's, which
// hides the tracked connection that holds a connection's end.

// monoBase is the origin of monoNow.
var monoBase = time.Now()

// monoNow is the monotonic clock in nanoseconds since monoBase.
func monoNow() int64 { return int64(time.Since(monoBase)) }

// pgxKeepsNoLifetime reports whether the pgx this program is built with
// takes a MaxConnLifetime of 0 for no lifetime (v5.13.0 or later), as the
// program's build information says (a test binary's says nothing of its
// dependencies: the package's tests set it by the pgx they build with).
var pgxKeepsNoLifetime = sync.OnceValue(func() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, d := range bi.Deps {
		if d.Path != "github.com/jackc/pgx/v5" {
			continue
		}
		if d.Replace != nil {
			d = d.Replace
		}
		return versionAtLeast(d.Version, 5, 13, 0)
	}
	return false
})

// versionAtLeast reports whether module version v (vMAJOR.MINOR.PATCH,
// with any pre-release or pseudo-version suffix) is at least
// major.minor.patch. A version it cannot read is not.
func versionAtLeast(v string, major, minor, patch int) bool {
	v, ok := strings.CutPrefix(v, "v")
	if !ok {
		return false
	}
	v, _, _ = strings.Cut(v, "+")
	// A pre-release, or a pseudo-version (vX.Y.Z-0.time-hash names a
	// commit after vX.Y.(Z-1)), comes before the release it names.
	v, pre, _ := strings.Cut(v, "-")
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return false
	}
	var n [3]int
	for i, p := range parts {
		k, err := strconv.Atoi(p)
		if err != nil {
			return false
		}
		n[i] = k
	}
	want := [3]int{major, minor, patch}
	for i := range n {
		if n[i] != want[i] {
			return n[i] > want[i]
		}
	}
	return pre == ""
}

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

// markExpired runs after each check: it marks the connections of n's pool
// whose end has come.
func (n *node) markExpired() {
	if n.lifetime > 0 {
		n.conns.flagExpired(monoNow())
	}
}

// closeIfExpired closes conn if its end has come, and reports whether it
// did. Only called while n.nExpired > 0.
func (n *node) closeIfExpired(conn *pgx.Conn) bool {
	tc := trackedOf(conn)
	if tc == nil || !tc.expired.Load() {
		return false
	}
	n.closeNow(conn)
	return true
}

// closeNow closes a connection of n's pool that the pool is about to
// destroy (released or being acquired), after the pool's BeforeClose,
// which sees it open as when pgxpool closes it itself.
func (n *node) closeNow(conn *pgx.Conn) {
	if n.beforeClose != nil {
		if tc := trackedOf(conn); tc == nil || tc.beforeClosed.CompareAndSwap(false, true) {
			n.beforeClose(conn)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	conn.Close(ctx)
	cancel()
}

// beforeCloseHook wraps the pool's BeforeClose so that it runs once for a
// connection closeNow already ran it for.
func (n *node) beforeCloseHook(user func(*pgx.Conn)) func(*pgx.Conn) {
	if user == nil {
		return nil
	}
	n.beforeClose = user
	return func(conn *pgx.Conn) {
		if tc := trackedOf(conn); tc != nil && !tc.beforeClosed.CompareAndSwap(false, true) {
			return
		}
		user(conn)
	}
}
