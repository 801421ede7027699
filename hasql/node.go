package hasql

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgxha/pgxha/checker"
)

// node is one host of the connection string: its pool, its check
// connection and what the manager knows of it.
type node struct {
	// Read-only after newNode.
	m        *Manager
	index    int
	cfg      NodeConfig
	pool     *pgxpool.Pool
	checkCfg *pgx.ConnConfig
	conns    connRegistry

	// Live values read lock-free by acquires and balancers.
	inUse       atomic.Int64 // connections acquired through the manager, not yet released
	acquireErrs atomic.Int64 // failed acquires from this node's pool, ever
	latencyEWMA atomic.Int64 // smoothed check latency, nanoseconds
	replayLSN   atomic.Uint64
	lagBytes    atomic.Int64
	lagNanos    atomic.Int64
	lagKnown    atomic.Bool
	sync        atomic.Bool
	mayWrite    atomic.Bool // writable at its last check: a statement may have written
	replica     atomic.Bool // a replica that follows the master (a role that serves reads)
	suspect     atomic.Bool
	watchable   atomic.Bool // the last check found a replica: watch for its promotion
	watching    atomic.Bool // the promotion watcher runs now
	poisoned    sync.Map    // *pgx.Conn → struct{}: met 25006, closed on release
	nPoisoned   atomic.Int64

	// Re-check requests: pending is set, then the wait in progress (if any)
	// is cancelled; a burst of requests collapses into one check.
	pending    atomic.Bool
	cancelWait atomic.Pointer[context.CancelFunc]

	// ctx ends when the node leaves the set or the Manager closes: its
	// check goroutine stops then; done is closed once it has.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	tel    nodeTelemetry

	removed atomic.Bool                       // out of the node set: no new acquires
	tags    atomic.Pointer[map[string]string] // from the node's source; nil: none

	// Owned by the node's check goroutine.
	conn     *pgx.Conn
	remoteIP string

	// Guarded by m.mu.
	view nodeView
}

// nodeView is the manager's bookkeeping of a node; guarded by m.mu.
type nodeView struct {
	checked    bool // a check has finished
	up         bool
	suspect    bool
	timeouts   int // consecutive timed-out checks
	res        checker.Result
	resAt      time.Time
	latency    time.Duration
	ewma       time.Duration
	lastErr    error
	lastErrAt  time.Time
	role       Role
	syncState  string
	writable   bool
	splitBrain bool
	lagBytes   int64
	lag        time.Duration
	lagKnown   bool
	lagAt      time.Time
	remoteIP   string
	partial    bool // res comes from the promotion watcher, not a full check
	settled    bool // a role was derived with the master known (see roleChanged)

	// Derived by rebuildLocked (see roles.go).
	aliasOf        *node  // the node that reaches the same server, first in DSN order
	stale          bool   // writable on a timeline older than the cluster's newest
	detached       string // why the replica does not follow the master
	syncUnknown    string // why the replica's sync state is unknown
	loggedDetached string // what was logged of detached and syncUnknown
	loggedSync     string
	severPending   bool // lost master: cut in-flight work once another node is master

	// The node's WAL position (replayed or received, on a replica) at its
	// last two checks, and when each check ended; when the last began.
	pos, prevPos     checker.LSN
	posAt, prevPosAt time.Time
	checkBegan       time.Time
}

// posBefore returns the node's WAL position as of its latest check that
// ended no later than t.
func (v *nodeView) posBefore(t time.Time) (checker.LSN, bool) {
	switch {
	case !v.posAt.IsZero() && !v.posAt.After(t):
		return v.pos, true
	case !v.prevPosAt.IsZero() && !v.prevPosAt.After(t):
		return v.prevPos, true
	}
	return 0, false
}

// aheadOf reports whether x, a replica, had WAL that w, a writable node, had
// not written when w's last check began, at a check of x that ended before
// that: x has WAL from another timeline (or another server), so w is not the
// node x follows.
func (x *node) aheadOf(w *node) bool {
	pos, ok := x.view.posBefore(w.view.checkBegan)
	return ok && pos > w.view.res.LSN
}

func newNode(ctx context.Context, m *Manager, index int, nc NodeConfig) (*node, error) {
	pc, err := m.cfg.nodePoolConfig(nc)
	if err != nil {
		return nil, err
	}
	n := &node{m: m, index: index, cfg: nc, tel: m.tel.forNode(nc), done: make(chan struct{})}
	n.ctx, n.cancel = context.WithCancel(m.ctx)

	// The check connection: the node's settings, its own name, no user
	// tracer (checks are not the application's queries) and no timeout of
	// its own (each check has CheckTimeout).
	n.checkCfg = pc.ConnConfig.Copy()
	n.checkCfg.Tracer = nil
	n.checkCfg.RuntimeParams["application_name"] = "pgxha-check"
	n.checkCfg.ConnectTimeout = 0

	userTracer := pc.ConnConfig.Tracer
	pc.ConnConfig.Tracer = newNodeTracer(n, userTracer)
	dial := pc.ConnConfig.DialFunc
	pc.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return n.conns.track(c), nil
	}
	n.pool, err = pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		n.cancel()
		return nil, fmt.Errorf("hasql: pool for %s: %w", nc.Addr, err)
	}
	return n, nil
}

// run is the node's check loop, owned by the Manager: it ends on Close.
func (n *node) run(checked chan<- struct{}) {
	m := n.m
	defer m.wg.Done()
	defer close(n.done)
	defer n.closeCheckConn()
	first := true
	var w waited
	for n.ctx.Err() == nil {
		res, latency, err := w.res, w.latency, error(nil)
		if !w.checked {
			n.pending.Store(false)
			res, latency, err = n.check()
		}
		if n.ctx.Err() != nil {
			return
		}
		again := m.report(n, res, latency, err)
		if first {
			first = false
			select {
			case checked <- struct{}{}: // buffered for every node made with the Manager
			default: // a node added later: nobody waits
			}
		}
		w = waited{}
		if again {
			continue
		}
		w = n.wait(m.untilTick(m.interval()))
	}
}

// check runs one check, connecting first if needed, within CheckTimeout.
func (n *node) check() (checker.Result, time.Duration, error) {
	m := n.m
	ctx, cancel := context.WithTimeout(n.ctx, m.cfg.CheckTimeout)
	defer cancel()
	begin := time.Now()
	if m.snap.Load().master == n {
		// A master whose check is slow may be hanging: check the others
		// fast meanwhile, so a promotion is seen at once.
		slow := time.AfterFunc(m.slowThreshold(n), func() { m.masterSlow(n) })
		defer slow.Stop()
	}
	if n.conn == nil || n.conn.IsClosed() {
		conn, err := pgx.ConnectConfig(ctx, n.checkCfg)
		if err != nil {
			if ctx.Err() != nil && n.ctx.Err() == nil {
				err = fmt.Errorf("check timed out after %s: %w", m.cfg.CheckTimeout, err)
			}
			return checker.Result{}, time.Since(begin), err
		}
		n.conn = conn
		if a, ok := conn.PgConn().Conn().RemoteAddr().(*net.TCPAddr); ok {
			n.remoteIP = a.IP.String()
		}
	}
	res, err := m.cfg.Checker.Check(ctx, n.conn)
	latency := time.Since(begin)
	if err != nil {
		n.closeCheckConn()
		if ctx.Err() != nil && n.ctx.Err() == nil {
			err = fmt.Errorf("check timed out after %s: %w", m.cfg.CheckTimeout, err)
		}
	}
	return res, latency, err
}

func (n *node) closeCheckConn() {
	if n.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	n.conn.Close(ctx)
	n.conn = nil
}

// waited is what a wait found: with checked, a check of the node made at
// its end (the promotion watcher of a checker.PromotionWatcher checks in the
// same round trip), which takes the place of the next check.
type waited struct {
	checked bool
	res     checker.Result
	latency time.Duration
}

// wait waits d before the next check, or less when a re-check is requested,
// the manager closes or the check connection's server goes away. On a
// replica (with WatchPromotion) the wait is a statement that polls
// pg_is_in_recovery() on the server every PromotionPoll and returns as soon
// as the replica is promoted (the node is then routed to as master at once,
// see promotionSeen); with the built-in checker the same statement ends with
// the next check, so a replica costs one round trip per interval.
// Elsewhere (with WaitOnSocket) it reads the idle connection's socket, which
// ends when the server closes it (shutdown, crash, termination). A re-check
// request cuts either short.
func (n *node) wait(d time.Duration) waited {
	m := n.m
	watch := m.cfg.WatchPromotion && n.conn != nil && n.watchable.Load()
	limit := d
	if watch {
		limit = d + m.cfg.CheckTimeout // a hung replica makes the watcher overrun
	}
	ctx, cancel := context.WithTimeout(n.ctx, limit)
	defer cancel()
	n.cancelWait.Store(&cancel)
	defer n.cancelWait.Store(nil)
	if n.pending.Load() {
		return waited{}
	}
	switch {
	case watch:
		poll := m.cfg.PromotionPoll
		n.watching.Store(true)
		begin := time.Now()
		var w checker.Watch
		var err error
		if pw, ok := m.cfg.Checker.(checker.PromotionWatcher); ok {
			w, err = pw.WatchAndCheck(ctx, n.conn, d, poll)
		} else {
			w.Promoted, err = checker.WatchPromotion(ctx, n.conn, d, poll)
		}
		n.watching.Store(false)
		switch {
		case err != nil:
			// Cut short (the connection is unusable then), a server gone or
			// hung: the check that follows tells which.
			n.closeCheckConn()
		case w.Promoted != nil:
			m.promotionSeen(n, *w.Promoted)
		case w.Checked && !n.pending.Load():
			return waited{checked: true, res: w.Result, latency: max(time.Since(begin)-w.Waited, 0)}
		}
	case m.cfg.WaitOnSocket && n.conn != nil:
		// Reads the socket until ctx ends: an error other than ctx's means
		// the server went away.
		err := n.conn.PgConn().WaitForNotification(ctx)
		if err != nil && ctx.Err() == nil {
			n.closeCheckConn()
		}
	default:
		<-ctx.Done()
	}
	return waited{}
}

// trigger requests a check now.
func (n *node) trigger() {
	n.pending.Store(true)
	if c := n.cancelWait.Load(); c != nil {
		(*c)()
	}
}

// hurry asks for a check now unless the node is a replica whose promotion
// watcher runs: the watcher already reports a promotion, and cutting it
// short would cost its connection. Used when fast checks begin.
func (n *node) hurry() {
	if n.watching.Load() {
		return
	}
	n.trigger()
}

// acquireFailed records a failed acquire from the node's pool and has the
// node checked at once.
func (n *node) acquireFailed(err error) {
	n.acquireErrs.Add(1)
	n.m.mu.Lock()
	if n.view.up {
		// A node already down keeps the error that put it down.
		n.view.lastErr, n.view.lastErrAt = fmt.Errorf("acquire: %w", err), time.Now()
	}
	n.m.mu.Unlock()
	n.trigger()
}

// servedAsReplica reports whether a statement run on n could not have
// written: n is a replica that follows the master now and was not writable
// at its last check.
func (n *node) servedAsReplica() bool {
	return !n.mayWrite.Load() && n.replica.Load()
}

// withinLag reports whether the node's last known lag is within the limits
// (0: no limit). With a limit, an unknown lag does not qualify.
func (n *node) withinLag(maxBytes int64, maxLag time.Duration) bool {
	if maxBytes == 0 && maxLag == 0 {
		return true
	}
	if !n.lagKnown.Load() {
		return false
	}
	if maxBytes > 0 && n.lagBytes.Load() > maxBytes {
		return false
	}
	if maxLag > 0 && time.Duration(n.lagNanos.Load()) > maxLag {
		return false
	}
	return true
}

// statusLocked builds the node's NodeStatus. Caller must hold m.mu.
func (n *node) statusLocked() NodeStatus {
	v := &n.view
	st := NodeStatus{
		Addr:         n.cfg.Addr,
		Name:         n.name(),
		Role:         v.role,
		Up:           v.up || v.suspect,
		Suspect:      v.suspect,
		Writable:     v.writable,
		SplitBrain:   v.splitBrain,
		SyncState:    v.syncState,
		SyncUnknown:  v.syncUnknown,
		Detached:     v.detached,
		StaleMaster:  v.stale,
		SystemID:     v.res.SystemID,
		LastCheck:    v.resAt,
		CheckLatency: v.latency,
		LastError:    v.lastErr,
		LastErrorAt:  v.lastErrAt,
	}
	if v.up || v.suspect {
		st.Timeline = v.res.Timeline
		st.LSN = v.res.LSN
		st.ReplayPaused = v.res.ReplayPaused
		if v.res.InRecovery {
			st.ReceiveLSN = v.res.ReceiveLSN
		}
	}
	if v.role.IsReplica() {
		st.LagBytes, st.Lag, st.LagKnown, st.LagAt = v.lagBytes, v.lag, v.lagKnown, v.lagAt
	}
	if v.aliasOf != nil {
		st.SameAs = v.aliasOf.cfg.Addr
	}
	if n.m.closedFlag.Load() {
		st.Role, st.Up, st.Suspect, st.Writable = RoleUnknown, false, false, false
		st.LastError = ErrClosed
	}
	return st
}

// name is how the node is known in its master's pg_stat_replication.
// Caller must hold m.mu.
func (n *node) name() string {
	if n.cfg.Name != "" {
		return n.cfg.Name
	}
	return n.view.res.Name
}

// sever closes every connection of the node's pool that is checked out,
// after the pool was reset: operations in flight on a hung or fenced node
// fail now instead of when the application's context ends.
func (n *node) sever() int {
	return n.conns.closeAll()
}

// connRegistry tracks the network connections of a node's pool.
type connRegistry struct {
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

type trackedConn struct {
	net.Conn
	reg  *connRegistry
	once sync.Once
}

func (r *connRegistry) track(c net.Conn) net.Conn {
	tc := &trackedConn{Conn: c, reg: r}
	r.mu.Lock()
	if r.conns == nil {
		r.conns = make(map[*trackedConn]struct{})
	}
	r.conns[tc] = struct{}{}
	r.mu.Unlock()
	return tc
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.reg.mu.Lock()
		delete(c.reg.conns, c)
		c.reg.mu.Unlock()
	})
	return c.Conn.Close()
}

func (r *connRegistry) closeAll() int {
	r.mu.Lock()
	conns := make([]*trackedConn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return len(conns)
}

func (r *connRegistry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}
