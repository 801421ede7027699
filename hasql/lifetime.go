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
// connections past their end (markExpired); an acquire that comes to a
// marked connection has pgxpool destroy it instead of handing it out,
// without a ping (the ShouldPing hook passes it, the PrepareConn hook
// refuses it: pgxpool's destroy runs BeforeClose on it,
// open, in its own goroutine, and the acquire takes the next connection
// or makes one). A connection in use is never cut for its lifetime; one
// released past its end goes back idle, marked. An idle connection past
// its end stays open until an acquire comes to it or
// pool_max_conn_idle_time closes it (never while the pool is at
// pool_min_conns): taking the idle connections out of the pool to close
// them (pgxpool.AcquireAllIdle) would restart every idle connection's
// idle time. What is kept per acquire is one atomic load (nExpired),
// which is zero but while a marked connection is open. The end is found
// at the first check after it: a connection may be handed out up to a
// check interval past it (longer while a check waits on a server that
// does not answer).
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

// pastEnd reports whether conn, of n's pool, is marked past its end: one
// atomic load while none is.
func (n *node) pastEnd(conn *pgx.Conn) bool {
	if n.nExpired.Load() == 0 {
		return false
	}
	tc := trackedOf(conn)
	return tc != nil && tc.expired.Load()
}

// prepareHook returns the PrepareConn of a pool whose lifetime the node
// keeps: it refuses a connection past its end (pgxpool destroys it), and
// runs the user's PrepareConn, or the deprecated BeforeAcquire, which
// pgxpool would run in its place, on the others.
func (n *node) prepareHook(user func(context.Context, *pgx.Conn) (bool, error), before func(context.Context, *pgx.Conn) bool) func(context.Context, *pgx.Conn) (bool, error) {
	return func(ctx context.Context, conn *pgx.Conn) (bool, error) {
		if n.pastEnd(conn) {
			return false, nil
		}
		switch {
		case user != nil:
			return user(ctx, conn)
		case before != nil:
			return before(ctx, conn), nil
		}
		return true, nil
	}
}
