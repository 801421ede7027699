package hasql

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sys/cpu"

	"github.com/pgxha/pgxha/checker"
	"github.com/pgxha/pgxha/hasql/internal/topology"
)

// node is one host of the connection string: its pool, its check
// connection and what the manager knows of it.
type node struct {
	// Read-only after newNode.
	m     *Manager
	index int
	cfg   NodeConfig
	pool  *pgxpool.Pool
	conns connRegistry
	// unboundAfterConnect: the pool's connections read messages of at most
	// maxPreAuthMessage until connected (pgxha's start-time query
	// included), pgx's own bound after.
	unboundAfterConnect bool
	// beforeConnect sets the credentials of every connection to the node
	// (see withCredentials).
	beforeConnect func(context.Context, *pgx.ConnConfig) error

	// maxConns is the pool's MaxConns: an acquire beyond it may wait for a
	// connection to be released (see acquire).
	maxConns int64
	// poolWithin: what the pool may wait for on an acquire's behalf (a
	// connection being made, the ping of one that sat idle) ends within
	// Config.AcquireTimeout, or that bound is off. Else an acquire whose
	// context has no deadline takes the slow path, which bounds it.
	poolWithin bool

	// Live values read lock-free by acquires and balancers. inUse, which
	// every acquire and release writes, has a cache line of its own: the
	// read-only fields above, which every acquire reads, stay in the other
	// cores' caches while it changes.
	_     cpu.CacheLinePad
	inUse atomic.Int64 // connections acquired from the pool, or being acquired, not yet released
	_     cpu.CacheLinePad
	// waiting counts the acquires that wait in a full pool (the slow way,
	// see acquireWhile), counted in inUse but not yet by the pool.
	waiting atomic.Int64
	// unreleased is what reconcileInUse found counted in inUse and not by
	// the pool at the last check, handedOut the pool's acquires then (the
	// check goroutine's own).
	unreleased, handedOut int64
	// quietSince is when the pool's current lull began (zero: not in one).
	quietSince time.Time
	// checkLatency is how long the last check took, failed or not.
	// Guarded by m.mu.
	checkLatency time.Duration
	// keepAliveWarn logs once that the kernel's watch could not be set.
	keepAliveWarn sync.Once
	acquireErrs   atomic.Int64 // failed acquires from this node's pool, ever
	latencyEWMA   atomic.Int64 // smoothed check latency, nanoseconds
	replayLSN     atomic.Uint64
	// probedLSN is a replay position a probe read with the timeline not
	// shown to the pool's session (see probedReplay), until the next
	// check; probeWoke is when a probe last asked for a check (unix
	// nanoseconds).
	probedLSN, probeWoke atomic.Int64
	// waitMu guards waitAsk, the question WaitReplayed's callers have in
	// flight to this node (nil: none; see Manager.replayedOnConn).
	waitMu  sync.Mutex
	waitAsk *replayAsk
	// errorWoke is when an error the application met last asked for a
	// check (unix nanoseconds; see errorWake).
	errorWoke atomic.Int64
	// errorWakeDue: a wake deferred to the end of errorWake's window is
	// pending.
	errorWakeDue atomic.Bool
	errorTimer   atomic.Pointer[time.Timer] // the deferred wake's, stopped by closePool
	lagBytes     atomic.Int64
	lagNanos     atomic.Int64
	lagKnown     atomic.Bool
	// inRecoveryBegan is when the last check that found the node in
	// recovery began (Unix nanoseconds; 0: none did): see lastInRecovery.
	inRecoveryBegan atomic.Int64
	sync            atomic.Bool
	mayWrite        atomic.Bool   // writable at its last check: a statement may have written
	replica         atomic.Bool   // a replica that follows the master (a role that serves reads)
	serverStart     atomic.Int64  // the postmaster's start time at the last check, unix microseconds
	serverTL        atomic.Uint32 // the timeline at the last check
	serverSys       atomic.Uint64 // the system identifier at the last check
	suspect         atomic.Bool
	damped          atomic.Bool // flapping: no reads for a while (see Config.FlapCount)
	watchable       atomic.Bool // the last check found a replica: probe it for a promotion while checks are fast
	slow            atomic.Bool // a check of the node as master has taken longer than slowThreshold, and runs still
	poisoned        sync.Map    // *pgx.Conn → struct{}: met 25006, closed on release
	nPoisoned       atomic.Int64
	// lifetime and lifetimeJitter are the pool's MaxConnLifetime and
	// MaxConnLifetimeJitter when the node keeps them (see markExpired);
	// nExpired counts the connections past their end not yet closed.
	lifetime, lifetimeJitter time.Duration
	nExpired                 atomic.Int64

	// tlHidden: the last check found it in recovery with no walreceiver
	// timeline to see (a check user without pg_monitor, or none running):
	// serverTL is its restartpoint's or minimum recovery point's, which
	// lag what it replays (see behindTimeline).
	tlHidden atomic.Bool

	// untrackedEarly: a connection made before the node's first check
	// could not keep the start time of its server (the user wrapped the
	// network connection): the first check resets the pool.
	untrackedEarly atomic.Bool

	// redial asks the check goroutine to connect afresh: a connection of
	// the pool reached another server than the checks (see sameServer).
	redial atomic.Bool

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

	auth    authGate                          // connects held back after the server refused the credentials
	removed atomic.Bool                       // out of the node set: no new acquires
	tags    atomic.Pointer[map[string]string] // from the node's source; nil: none

	// The check connection's network connections (cancel requests'
	// included), and a context that ends their dials: Close cuts what a
	// server that does not answer leaves hanging (see closeCheckConns).
	checkConns connRegistry
	abort      context.Context
	abortDials context.CancelFunc
	// A context that ends the dials of cancel requests (see dialCancel)
	// once closePool has given them their time.
	cancelsOver context.Context
	endCancels  context.CancelFunc

	// Owned by the node's check goroutine.
	checkCfg *pgx.ConnConfig
	conn     *pgx.Conn
	remoteIP string
	lookedUp time.Time // when nameMoved last looked the host up
	// unprepared: the server side forgot a prepared check statement (a
	// pooler in transaction mode hands each statement to any server
	// connection): checks run unprepared since.
	unprepared bool
	// closed holds check connections closed while their cleanup (a cancel
	// request, the goodbye to the server) may still run.
	closed []*pgconn.PgConn

	// Guarded by m.mu: the decision core's view of the node (read-only
	// here), and a channel closed, and replaced, by each report of a check.
	cv       *topology.Node
	reported chan struct{}
	// sourceName is, for a node of the connection string that the user
	// gave no name, the member name its discoverer reports at its address
	// now ("" for none): the node goes by it (see member). Written by
	// reconcile alone.
	sourceName string
}

// id is the node's name in the decision core.
func (n *node) id() topology.ID { return topology.ID(n.index) }

// member describes the node to the decision core: the name the user gave
// it, else the one its source reports. Caller must hold m.mu.
func (n *node) member() topology.Member {
	return topology.Member{ID: n.id(), Addr: n.cfg.Addr, Host: n.cfg.Host, Name: cmp.Or(n.cfg.Name, n.sourceName), Trusted: n.cfg.trusted}
}

func newNode(ctx context.Context, m *Manager, index int, nc NodeConfig) (*node, error) {
	pc, err := m.cfg.nodePoolConfig(nc)
	if err != nil {
		return nil, err
	}
	n := &node{m: m, index: index, cfg: nc, tel: m.tel.forNode(nc), done: make(chan struct{})}
	n.conns.n = n
	n.reported = make(chan struct{})
	n.ctx, n.cancel = context.WithCancel(m.ctx)
	n.abort, n.abortDials = context.WithCancel(context.Background())
	n.cancelsOver, n.endCancels = context.WithCancel(context.Background())
	n.checkCfg = n.checkConnConfig(pc.ConnConfig)

	// An acquire whose context has no deadline must not wait without
	// bound inside the pool either (see Config.AcquireTimeout): for the
	// ping of a connection that sat idle (a hung or partitioned server
	// never answers it) and for a connection being made.
	if pc.PingTimeout <= 0 {
		pc.PingTimeout = m.cfg.CheckTimeout
	}
	// The connect bound is at least the check timeout: a server the
	// checks can connect to, the pool can too (an acquire with a deadline
	// of its own is otherwise bounded by that alone).
	if pc.ConnConfig.ConnectTimeout <= 0 && m.cfg.AcquireTimeout > 0 {
		pc.ConnConfig.ConnectTimeout = max(m.cfg.AcquireTimeout, m.cfg.CheckTimeout)
	}

	n.beforeConnect = n.withCredentials(pc.BeforeConnect)
	pc.BeforeConnect = n.beforeConnect
	pc.ShouldPing = n.shouldPingHook(pc.ShouldPing)
	// The node keeps the connections' lifetime (see markExpired): pgxpool
	// would read the clock for it on every acquire and release.
	if pc.ConnConfig.AfterNetConnect == nil && pgxKeepsNoLifetime() {
		n.lifetime, n.lifetimeJitter = pc.MaxConnLifetime, pc.MaxConnLifetimeJitter
		pc.MaxConnLifetime, pc.MaxConnLifetimeJitter = 0, 0
		pc.PrepareConn, pc.BeforeAcquire = n.prepareHook(pc.PrepareConn, pc.BeforeAcquire), nil
	}

	pc.ConnConfig.ValidateConnect = n.sameServer(pc.ConnConfig.ValidateConnect)
	if isPgxFrontend(pc.ConnConfig.BuildFrontend) {
		// Bounded until connected, pgxha's start-time query included
		// (see sameServer), then pgx's own bound again; what the server
		// sends is read through a serverReader (see boundedFrontend), the
		// messages sent are read too (see wireFrontend). A frontend of
		// the user's gets the connection as it is.
		pc.ConnConfig.BuildFrontend = wireFrontend(boundedFrontend(pc.ConnConfig.BuildFrontend))
		n.unboundAfterConnect = true
	}
	userTracer := pc.ConnConfig.Tracer
	pc.ConnConfig.Tracer = newNodeTracer(n, userTracer)
	pc.ConnConfig.OnNotice = noteSyncRepCancel(pc.ConnConfig.OnNotice)
	dial := pc.ConnConfig.DialFunc
	pc.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		// A dial whose context the tracer did not mark as a connect's is
		// a cancel request's (see dialCancel). Either is tracked, and cut
		// with the node's connections.
		if ctx.Value(connectingKey{}) == nil {
			return n.dialCancel(ctx, dial, network, addr)
		}
		// A node being closed makes no connection, and one being made
		// when it closes is cut (see closePool).
		if n.abort.Err() != nil {
			return nil, errNodeClosed
		}
		c, err := n.dialUntilAbort(ctx, dial, network, addr)
		if err != nil {
			return nil, err
		}
		tc := n.conns.track(c)
		if n.abort.Err() != nil {
			tc.Close()
			return nil, errNodeClosed
		}
		return tc, nil
	}
	n.pool, err = pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		n.cancel()
		return nil, fmt.Errorf("hasql: pool for %s: %w", nc.Addr, err)
	}
	n.maxConns = int64(pc.MaxConns)
	at := m.cfg.AcquireTimeout
	n.poolWithin = at <= 0 || pc.PingTimeout <= at && pc.ConnConfig.ConnectTimeout > 0 && pc.ConnConfig.ConnectTimeout <= at
	return n, nil
}

// checkConnConfig makes the check connection's configuration from the
// node's pool configuration: the same server, credentials, TLS and dialer,
// but a session of its own. None of the DSN's run-time parameters
// (statement_timeout, search_path, options, ...) and none of the pool's
// hooks apply; it has its own application_name, no user tracer (checks are
// not the application's queries), no timeout of its own (each check has
// CheckTimeout) and prepared statements whatever default_query_exec_mode
// says (a check is planned once per connection; unprepared, it costs the
// server several times as much). Its network connections are tracked, so
// that Close can cut what an unreachable server leaves hanging.
func (n *node) checkConnConfig(pool *pgx.ConnConfig) *pgx.ConnConfig {
	cfg := pool.Copy()
	cfg.RuntimeParams = map[string]string{"application_name": "pgxha-check"}
	cfg.Tracer = nil
	cfg.ConnectTimeout = 0
	cfg.DefaultQueryExecMode = pgx.QueryExecModeCacheStatement
	cfg.StatementCacheCapacity = 16
	cfg.DescriptionCacheCapacity = 16
	cfg.BuildFrontend = boundedFrontend(cfg.BuildFrontend)
	cfg.AfterConnect = nil
	cfg.ValidateConnect = nil
	cfg.OnNotice = nil
	// A notification is read and dropped: the check connection listens to
	// none, and with none set pgx keeps every one a server sends, for the
	// connection's life.
	cfg.OnNotification = func(*pgconn.PgConn, *pgconn.Notification) {}
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := n.dialUntilAbort(ctx, dial, network, addr)
		if err != nil {
			return nil, err
		}
		if err := watchSilence(c, n.m.cfg.CheckKeepAlive, n.m.cfg.CheckTimeout); err != nil {
			// Some systems refuse some of the settings (OpenBSD, older
			// Windows): the checks alone then notice a silence.
			n.keepAliveWarn.Do(func() {
				n.m.log.Warn("pgxha: the kernel's watch on the check connection could not be set (hasql_check_keepalive): a partition is noticed by the checks alone",
					"addr", n.cfg.Addr, "err", err)
			})
		}
		return n.checkConns.track(c), nil
	}
	return cfg
}

// run is the node's check loop, owned by the Manager: it ends on Close.
func (n *node) run(checked chan<- struct{}) {
	m := n.m
	defer m.wg.Done()
	defer close(n.done)
	defer n.closeCheckConns()
	first := true
	for n.ctx.Err() == nil {
		n.pending.Store(false)
		began := time.Now() // no later than the check's own start
		res, err := n.check()
		// From began, not from the check's own start: began + latency is
		// when the check ended, which must be no earlier than its answer
		// came (the core orders one node's position before another's
		// check by it; measured from a later start, a position read after
		// another node's was taken for one read before it, on a busy
		// machine, and proved a healthy master behind its own replica).
		latency := time.Since(began)
		if n.ctx.Err() != nil {
			return
		}
		again := m.report(n, res, began, latency, err)
		n.reconcileInUse()
		n.markExpired()
		if first {
			first = false
			select {
			case checked <- struct{}{}: // buffered for every node made with the Manager
			default: // a node added later: nobody waits
			}
		}
		if again {
			continue
		}
		if n.nameMoved(m.untilTick(m.interval())) {
			n.redial.Store(true) // the next check follows the name
		}
		n.wait(m.untilTick(m.interval()))
	}
}

// inUseLull is how long the pool must have handed out nothing before
// reconcileInUse takes anything out of the count: an acquire between the
// count and the pool (a goroutine the scheduler left there on a busy
// machine) is not taken for a hijacked connection, whatever the check
// interval.
const inUseLull = time.Second

// reconcileInUse takes out of the in-use count the connections that left
// the pool without a release: Conn.Hijack hands a connection to its user
// and tells nobody, so the count (the balancers' input, and the gate that
// sends acquires to a full pool the slow way) would keep it for ever.
//
// What the count holds beyond the pool's acquired and constructing
// connections and the acquires waiting in the full pool is such
// connections, or acquires on their way between the count and the pool
// (the count is taken before the pool's; a release gives it back before
// the pool's, which makes the difference smaller, never larger). While
// acquires come and go some are always on their way, so the difference
// is only read at a check before which the pool handed out nothing since
// the check before, between two of the pool's statistics that agree, and
// only what two such checks in a row found, in a lull of inUseLull or
// more, is taken out: an acquire that sat between the count and the pool
// through all of it is the one way to take out too much. A busy pool
// keeps hijacked connections in its count until it has such a lull.
func (n *node) reconcileInUse() {
	before := n.pool.Stat()
	inUse := n.inUse.Load() - n.waiting.Load()
	after := n.pool.Stat()
	handedOut := after.AcquireCount() + after.CanceledAcquireCount()
	quiet := handedOut == n.handedOut && before.AcquireCount() == after.AcquireCount() &&
		before.CanceledAcquireCount() == after.CanceledAcquireCount() &&
		before.AcquiredConns() == after.AcquiredConns() && before.ConstructingConns() == after.ConstructingConns()
	n.handedOut = handedOut
	if !quiet {
		n.unreleased, n.quietSince = 0, time.Time{}
		return
	}
	now := time.Now()
	if n.quietSince.IsZero() {
		n.quietSince = now
	}
	d := max(inUse-int64(after.AcquiredConns())-int64(after.ConstructingConns()), 0)
	if k := min(d, n.unreleased); k > 0 && now.Sub(n.quietSince) >= inUseLull {
		n.inUse.Add(-k)
		d -= k
	}
	n.unreleased = d
}

// check runs one check, connecting first if needed, within CheckTimeout.
func (n *node) check() (checker.Result, error) {
	m := n.m
	ctx, cancel := context.WithTimeout(n.ctx, m.cfg.CheckTimeout)
	defer cancel()
	if m.snap.Load().master == n {
		// A master whose check is slow may be hanging: check the others
		// fast meanwhile (and probe the replicas for a promotion), for as
		// long as the check runs, so that a promotion is seen at once.
		var done atomic.Bool
		slow := time.AfterFunc(m.slowThreshold(n), func() {
			if !done.Load() {
				n.slow.Store(true)
				m.masterSlow(n)
			}
		})
		defer func() {
			done.Store(true)
			slow.Stop()
			n.slow.Store(false)
		}()
	}
	if n.redial.Swap(false) {
		n.closeCheckConn() // a pool connection reached another server (see sameServer)
	}
	for retried := false; ; retried = true {
		reused := n.conn != nil && !n.conn.IsClosed()
		if err := n.connect(ctx); err != nil {
			if ctx.Err() != nil && n.ctx.Err() == nil {
				err = fmt.Errorf("check timed out after %s: %w", m.cfg.CheckTimeout, err)
			}
			return checker.Result{}, err
		}
		m.mu.Lock()
		readAll := m.core.WantReplicas(n.id(), time.Now(), m.cfg.CheckInterval) // the next check comes within it
		names := readAll && m.core.WantNames(n.id())
		m.mu.Unlock()
		cctx := ctx
		if readAll {
			cctx = checker.ReadAll(ctx) // see topology.Core.WantReplicas
		}
		if names {
			cctx = checker.ReadNames(cctx) // see topology.Core.WantNames
		}
		res, err := m.cfg.Checker.Check(cctx, n.conn)
		if err == nil {
			clearResult(&res, n.conn.Config().Password)
		}
		if err != nil {
			// A server that got the password could say it back (see
			// scrubConnect): nothing of it goes on to NodeStatus or a log.
			err = clearEchoed(err, n.conn.Config().Password)
			lost := reused && n.conn.IsClosed()
			if tc := trackedNet(n.conn.PgConn().Conn()); tc != nil && tc.reader != nil && tc.reader.err != nil {
				// The connection was ended by a bound on what the server
				// sends (see serverReader): say which, and do not retry
				// on a new connection, which would begin the count again.
				err, lost = fmt.Errorf("%w (%v)", tc.reader.err, err), false
			}
			n.closeCheckConn()
			if !retried && lost && ctx.Err() == nil {
				// The server closed a connection that had served checks:
				// its backend may have been terminated on a node that is
				// fine (so that every connection opens again with rotated
				// credentials, say). A node that is down refuses the new
				// connection, and the check fails at once.
				continue
			}
			if !retried && !n.unprepared && lostPrepared(err) {
				// The statement was prepared on one server connection and
				// run on another, or met one prepared by an earlier client
				// of the same server connection: a pooler in transaction
				// mode. Run checks unprepared (simple protocol) from now on.
				n.unprepared = true
				n.checkCfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
				m.log.Info("pgxha: the server side does not keep prepared statements (a pooler in transaction mode?): checks run unprepared",
					"addr", n.cfg.Addr, "err", err)
				continue
			}
			if ctx.Err() != nil && n.ctx.Err() == nil {
				err = fmt.Errorf("check timed out after %s: %w", m.cfg.CheckTimeout, err)
			}
		}
		return res, err
	}
}

// lostPrepared reports an error of a prepared statement that the server
// side does not have (26000) or already has (42P05).
func lostPrepared(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "26000" || pgErr.Code == "42P05")
}

// nameLookupEvery is how often, at most, the checks of a node whose host
// is a DNS name look the name up again (see nameMoved).
const nameLookupEvery = 5 * time.Second

// nameMoved reports whether n's host, a DNS name, no longer resolves to
// the address the check connection reached: a failover script moved it.
// The checks resolve the name when they connect, and keep their connection
// while it works; without a look now and then they would follow a moved
// name only once something ends that connection, and an old master that
// keeps running would keep the writes. It looks at most every
// nameLookupEvery (or check interval, if longer), in the time left before
// the next check (budget; at least 50 ms, at most the check timeout); a
// failed look, or an empty answer, says nothing.
func (n *node) nameMoved(budget time.Duration) bool {
	host := n.cfg.Host
	if host == "" || strings.HasPrefix(host, "/") || net.ParseIP(host) != nil ||
		n.remoteIP == "" || n.conn == nil || n.conn.IsClosed() {
		return false
	}
	now := time.Now()
	if now.Sub(n.lookedUp) < max(nameLookupEvery, n.m.cfg.CheckInterval) {
		return false
	}
	n.lookedUp = now
	lookup := n.checkCfg.LookupFunc
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	ctx, cancel := context.WithTimeout(n.ctx, min(max(budget, 50*time.Millisecond), n.m.cfg.CheckTimeout))
	defer cancel()
	addrs, err := lookup(ctx, host)
	if err != nil || len(addrs) == 0 {
		return false
	}
	for _, a := range addrs {
		if ip := net.ParseIP(a); a == n.remoteIP || ip != nil && ip.String() == n.remoteIP {
			return false
		}
	}
	n.m.log.Info("pgxha: the node's name resolves to other addresses than the one its checks reach: connecting afresh",
		"addr", n.cfg.Addr, "reached", n.remoteIP, "resolves", addrs)
	return true
}

// connect opens the check connection unless it is open.
func (n *node) connect(ctx context.Context) error {
	if n.conn != nil && !n.conn.IsClosed() {
		return nil
	}
	n.closeCheckConn() // closed by pgx: its cleanup may still run
	conn, err := n.connectCheck(ctx)
	if err != nil {
		return err
	}
	n.conn = conn
	if a, ok := conn.PgConn().Conn().RemoteAddr().(*net.TCPAddr); ok {
		n.remoteIP = a.IP.String()
	}
	return nil
}

// closeCheckConn closes the check connection and keeps it in n.closed
// until its cleanup is done: a connection whose statement was interrupted
// sends the server a cancel request as it closes.
func (n *node) closeCheckConn() {
	if n.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	n.conn.Close(ctx)
	cancel()
	n.closed = slices.DeleteFunc(append(n.closed, n.conn.PgConn()), func(c *pgconn.PgConn) bool {
		select {
		case <-c.CleanupDone():
			return true
		default:
			return false
		}
	})
	n.conn = nil
}

// dialUntilAbort dials with dial, given up when the node closes (abort).
func (n *node) dialUntilAbort(ctx context.Context, dial pgconn.DialFunc, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(n.abort, cancel)
	defer stop()
	return dial(ctx, network, addr)
}

// whileIn returns a context that also ends when n leaves the set or the
// Manager closes (n.ctx), and the function that releases it.
func (n *node) whileIn(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(n.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// errNodeClosed is the error of a connection a closing node does not make.
var errNodeClosed = errors.New("hasql: the node is closed")

// closePool closes n's pool once n is out of use (its check loop stopped,
// or never started). Connections still being made (pool_min_conns', or a
// refill's, to a server that hangs) are cut first, and no other is made:
// pgxpool's Close waits for them, up to their connect_timeout. Then it
// waits until the connections acquired from the pool are released. The
// cancel requests of statements their contexts interrupt go out meanwhile,
// for up to CheckTimeout (see dialCancel and settleCancels); then those
// connections are cut (see stopCancels).
func (n *node) closePool() {
	n.abortDials()
	n.conns.closeIf(func(c *trackedConn) bool { return !c.live.Load() && !c.cancelReq })
	over := time.AfterFunc(n.m.cfg.CheckTimeout, n.stopCancels)
	n.pool.Close()
	n.settleCancels()
	over.Stop()
	n.stopCancels()
	if t := n.errorTimer.Load(); t != nil {
		t.Stop() // a deferred check of a node closed
	}
}

// connectingKey marks the context of a connection being made (see
// nodeTracer.TraceConnectStart): a dial without it is a cancel request's.
type connectingKey struct{}

// connecting marks ctx as a connect's (see connectingKey).
func connecting(ctx context.Context) context.Context {
	return context.WithValue(ctx, connectingKey{}, struct{}{})
}

// dialCancel dials for a cancel request, which pgconn sends through the
// connection's DialFunc as it closes a connection whose statement was
// interrupted (its context ended): the server stops the statement, and
// pgconn's cleanup, which reads the connection until the server ends it,
// is over. It goes out while the node closes too, for up to CheckTimeout:
// refused, the server ran the statement to its end, its session outliving
// Close, and pgconn's cleanup with it.
func (n *node) dialCancel(ctx context.Context, dial pgconn.DialFunc, network, addr string) (net.Conn, error) {
	if n.cancelsOver.Err() != nil {
		return nil, errNodeClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(n.cancelsOver, cancel)
	defer stop()
	c, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := n.conns.trackCancel(c)
	if n.cancelsOver.Err() != nil {
		tc.Close()
		return nil, errNodeClosed
	}
	return tc, nil
}

// settleCancels waits, until stopCancels ends their time, for the
// connections a context interrupted to be closed by pgconn, their cancel
// requests sent (pgconn sends one before it closes the connection).
func (n *node) settleCancels() {
	interrupted := func(c *trackedConn) bool { return c.interrupted.Load() && !c.cancelReq }
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for n.conns.count(interrupted) > 0 {
		select {
		case <-n.cancelsOver.Done():
			return
		case <-tick.C:
		}
	}
}

// stopCancels lets no other cancel request out and cuts those under way
// (to a server that does not answer), and the connections a context
// interrupted: pgconn, closing one, reads it until the server ends it, for
// up to 15 s, and pgxpool's Close waits for that.
func (n *node) stopCancels() {
	n.endCancels()
	n.conns.closeIf(func(c *trackedConn) bool { return c.cancelReq || c.interrupted.Load() })
}

// closeCheckConns closes the check connection and waits until every check
// connection's cleanup is done, cancel requests included, so that nothing
// reaches a server after Close returned (a cancel request arriving as its
// client leaves crashed PgBouncer 1.18). A server that does not answer
// within CheckTimeout gets its connections cut instead.
func (n *node) closeCheckConns() {
	n.closeCheckConn()
	timer := time.NewTimer(n.m.cfg.CheckTimeout)
	defer timer.Stop()
	for _, c := range n.closed {
		select {
		case <-c.CleanupDone():
			continue
		case <-timer.C:
		}
		n.abortDials()
		n.checkConns.closeAll()
		<-c.CleanupDone() // prompt now: its dial and its reads fail
	}
	n.closed = nil
	n.abortDials()
}

// wait waits d before the next check, or less when a re-check is requested,
// the manager closes or the check connection's server goes away. It runs no
// statement: the check connection's socket is read (with WaitOnSocket),
// which ends when the server closes it (shutdown, crash, termination). A
// replica, while checks are fast (no master, or the master suspect or
// slow) and with WatchPromotion, is probed every PromotionPoll instead (see
// watch). A re-check request cuts either short and leaves the connection
// as it is.
func (n *node) wait(d time.Duration) {
	m := n.m
	ctx, cancel := context.WithTimeout(n.ctx, d)
	defer cancel()
	n.cancelWait.Store(&cancel)
	defer n.cancelWait.Store(nil)
	if n.pending.Load() {
		return
	}
	switch {
	case m.cfg.WatchPromotion && n.conn != nil && n.watchable.Load() && m.fastSince.Load() != 0:
		n.watch(ctx)
	case m.cfg.WaitOnSocket && n.conn != nil:
		// Reads the socket until ctx ends: an error other than ctx's means
		// the server went away. Cut short by ctx, the read leaves the
		// connection usable (pgconn sets a deadline, no cancel request).
		// A notification (dropped, see checkConnConfig) does not end the
		// wait: a server does not choose when its next check runs.
		err := n.conn.PgConn().WaitForNotification(ctx)
		for err == nil {
			err = n.conn.PgConn().WaitForNotification(ctx)
		}
		if ctx.Err() == nil {
			n.closeCheckConn()
		}
	default:
		<-ctx.Done()
	}
}

// watch probes a replica every PromotionPoll until ctx ends, with
// statements of their own (checker.ProbePromotion: microseconds, no
// snapshot kept) bounded by CheckTimeout, not by ctx, so that a re-check
// request never interrupts one. A promotion is routed to at once (see
// promotionSeen); the full check follows.
func (n *node) watch(ctx context.Context) {
	m := n.m
	timer := time.NewTimer(m.cfg.PromotionPoll)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		pctx, cancel := context.WithTimeout(n.ctx, m.cfg.CheckTimeout)
		p, err := checker.ProbePromotion(pctx, n.conn)
		cancel()
		switch {
		case err != nil:
			// A server gone or hung: the check that follows tells which.
			n.closeCheckConn()
			return
		case p != nil:
			m.promotionSeen(n, *p)
			return
		}
		timer.Reset(m.cfg.PromotionPoll)
	}
}

// probedReplay records a replay position n reported outside its checks (a
// MinLSN probe, WaitReplayed), read with the timeline its walreceiver
// streams (tl, 0 when the pool's session may not see it). Of the timeline
// n's last check showed, it is n's position for routing. Of another (a
// replica repointed to a master the view has not seen yet, which may have
// forked before the positions asked for) it is not: its check, asked for
// now, tells the rest. With the timeline not shown, it counts for reads
// that name no timeline (MinLSN, WaitReplayed), not for After's, until the
// next check.
func (n *node) probedReplay(replay LSN, tl uint32) {
	switch {
	case tl == 0:
		for cur := n.probedLSN.Load(); cur < int64(replay) && !n.probedLSN.CompareAndSwap(cur, int64(replay)); cur = n.probedLSN.Load() {
		}
	case tl != n.serverTL.Load():
		n.probeWake()
	default:
		for cur := n.replayLSN.Load(); cur < uint64(replay) && !n.replayLSN.CompareAndSwap(cur, uint64(replay)); cur = n.replayLSN.Load() {
		}
	}
}

// replayedAny is n's replay position for a read that names no timeline:
// its checked one, or one a probe read since (see probedReplay).
func (n *node) replayedAny() LSN {
	return LSN(max(n.replayLSN.Load(), uint64(max(n.probedLSN.Load(), 0))))
}

// probeWake asks for a check of n for what a probe of its position saw,
// at most once per CheckInterval: probes come at the rate of reads, and
// must not drive the checks.
func (n *node) probeWake() {
	if onceEvery(&n.probeWoke, n.m.cfg.CheckInterval) {
		n.trigger()
	}
}

// maxErrorWake is the most often an error the application meets on a
// node's connections asks for a check of it (see errorWake), with a
// check interval above it.
const maxErrorWake = time.Second

// errorWake asks for a check of n for an error the application met on its
// connections (a lost connection, 25006, 57P01, ...), at most once per
// CheckInterval or maxErrorWake, whichever is shorter: the first error
// after a quiet time has n checked at once, and errors come at the rate
// of the application's statements (its own timeouts, a stray write on a
// replica, an overloaded server), which must not drive the checks.
func (n *node) errorWake() {
	d := min(n.m.cfg.CheckInterval, maxErrorWake)
	if onceEvery(&n.errorWoke, d) {
		n.trigger()
		return
	}
	// Within the window: the wake is deferred to its end, not dropped, so
	// that every error is followed by a check begun after it (one timer
	// per node at a time; a wake at its end counts as the window's).
	if n.errorWakeDue.CompareAndSwap(false, true) {
		wait := time.Duration(n.errorWoke.Load() + int64(d) - time.Now().UnixNano())
		t := time.AfterFunc(min(max(wait, 0), d), func() {
			n.errorWakeDue.Store(false)
			if n.m.ctx.Err() == nil && onceEvery(&n.errorWoke, 0) {
				n.trigger()
			}
		})
		n.errorTimer.Store(t)
		if n.m.ctx.Err() != nil || n.removed.Load() {
			t.Stop() // closePool may have run before the store
		}
	}
}

// onceEvery reports whether d has passed since the time in last (unix
// nanoseconds) and, for one caller among those that race, stores now
// there.
func onceEvery(last *atomic.Int64, d time.Duration) bool {
	now := time.Now().UnixNano()
	prev := last.Load()
	// A clock set back (prev ahead of now) ends the wait too: else it
	// would last as long as the step.
	return (now-prev >= int64(d) || now < prev) && last.CompareAndSwap(prev, now)
}

// trigger requests a check now.
func (n *node) trigger() {
	n.pending.Store(true)
	if c := n.cancelWait.Load(); c != nil {
		(*c)()
	}
}

// hurry asks for a check now. Used when fast checks begin.
func (n *node) hurry() { n.trigger() }

// acquireFailed records a failed acquire from the node's pool and has the
// node checked at once. err comes scrubbed of the password (node.acquire,
// acquireFast).
func (n *node) acquireFailed(err error) {
	n.acquireErrs.Add(1)
	n.connectFailed("acquire", err)
}

// connectFailed records a failed connect to the node (what says whose:
// "acquire" from its pool, "DB connect" or "listen") and has the node
// checked at once (see errorWake): the check may find the server down
// before the caller's wait for a change of the view ends. A node already down keeps the error
// that put it down. err comes scrubbed of the password.
func (n *node) connectFailed(what string, err error) {
	n.m.mu.Lock()
	n.m.core.AppError(n.id(), fmt.Errorf("%s: %w", what, err), time.Now())
	n.m.mu.Unlock()
	n.errorWake()
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
	v := n.cv
	st := NodeStatus{
		Addr:         n.cfg.Addr,
		Name:         v.Name(),
		Role:         Role(v.Role),
		Up:           v.Up || v.Suspect,
		Suspect:      v.Suspect,
		Writable:     v.Writable,
		SplitBrain:   v.SplitBrain,
		SyncState:    v.SyncState,
		SyncUnknown:  v.SyncUnknown,
		Detached:     v.Detached,
		Waiting:      v.Waiting,
		Damped:       v.Damped,
		DampedUntil:  v.DampedUntil,
		StaleMaster:  v.Stale,
		StaleBehind:  v.StaleBehind,
		SystemID:     v.Res.SystemID,
		LastCheck:    v.ResAt,
		CheckLatency: n.checkLatency,
		LastError:    v.LastErr,
		LastErrorAt:  v.LastErrAt,
	}
	if ae := n.auth.state(n.cfg.Addr); ae != nil {
		st.AuthError, st.AuthRetryAt = ae, ae.RetryAt
	}
	if v.Up || v.Suspect {
		st.Timeline = v.Res.Timeline
		st.LSN = v.Res.LSN
		st.ReplayPaused = v.Res.ReplayPaused
		if v.Res.InRecovery {
			st.ReceiveLSN = v.Res.ReceiveLSN
		}
	}
	if st.Role.IsReplica() {
		st.LagBytes, st.Lag, st.LagKnown, st.LagAt = v.LagBytes, v.Lag, v.LagKnown, v.LagAt
	}
	if v.AliasOf != nil {
		st.SameAs = v.AliasOf.Addr
	}
	if tags := n.tagMap(); tags != nil {
		st.Tags = maps.Clone(tags)
	}
	if n.m.closedFlag.Load() {
		st.Role, st.Up, st.Suspect, st.Writable = RoleUnknown, false, false, false
		st.LastError = ErrClosed
	}
	return st
}

// name is how the node is known in its master's pg_stat_replication.
// Caller must hold m.mu.
func (n *node) name() string { return n.cv.Name() }

// sever closes every connection of the node's pool that is checked out,
// after the pool was reset: operations in flight on a hung or fenced node
// fail now instead of when the application's context ends.
func (n *node) sever() int {
	return n.conns.closeAll()
}

// connRegistry tracks the network connections of a node's pool.
type connRegistry struct {
	// Read-only after newNode: the node whose pool's connections these
	// are (nil for check connections): their failures under a statement
	// read as a *NodeLostError naming it.
	n *node

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

type trackedConn struct {
	net.Conn
	reg  *connRegistry
	once sync.Once
	raw  syscall.RawConn // the socket, for idle checks (see deadSocket); nil when not one
	cut  atomic.Bool     // closed by sever: pgxha cut it
	live atomic.Bool     // connected and authenticated (see nodeTracer.TraceConnectEnd)
	// interrupted: a read or write under a statement ended on its
	// context's deadline, and no read succeeded since; pgconn closes the
	// connection then, sending a cancel request first (WaitForNotification
	// leaves it open: its next read that succeeds clears this).
	interrupted atomic.Bool
	cancelReq   bool // dialed for a cancel request (see dialCancel)
	// master: the node was the master when the connection's last
	// statement began (see nodeTracer.began).
	master atomic.Bool
	// netErr is the first error of the network under a statement: pgx may
	// report only "conn closed" (see NodeLost).
	netErr atomic.Pointer[error]
	// syncRepCancelled: the server answered the statement under way, or
	// the last one, with the warning that its wait for synchronous
	// standbys was cancelled (see SyncRepCancelled).
	syncRepCancelled atomic.Bool
	// watch, when set, is called with each statement's SQL before it is
	// sent (see stmtwatch.Watch).
	watch atomic.Pointer[func(sql string)]
	// endWatch, when set, is called with each traced statement's command
	// tag and error as it ends (see stmtwatch.Ended).
	endWatch atomic.Pointer[func(tag string, err error)]
	// sent is what the tracer said of the messages the connection sends
	// next, while watched (sentUntraced, sentTraced, sentBatch; see
	// wireWriter).
	sent atomic.Int32
	// prepared maps the names of statements the application prepared
	// on the connection to their SQL, for the watch (see resolve).
	prepMu         sync.Mutex
	prepared       map[string]prepared
	preparedClosed int // how many of prepared are closed
	// unnamed is the SQL of the unnamed statement last parsed while
	// watched; nil when unknown (parsed unwatched, or dropped by a simple
	// query). See readSent.
	unnamed atomic.Pointer[string]
	// wired: the connection's frontend writes through a wireWriter;
	// framed: one of its writes is under way; tlsAbove: TLS runs over
	// the connection; terminated: the frontend sent Terminate. See
	// unframed.
	wired, framed, tlsAbove, terminated atomic.Bool
	// syncPending: messages were sent since the last Sync (an error
	// among them has the server skip the rest, up to the Sync);
	// unframedPending: a write past the frontend under TLS, not yet
	// followed by a read or a close (see unframed).
	syncPending, unframedPending atomic.Bool
	// start is the start time of the server the connection reached (see
	// sameServer); 0 for a check connection, or until it is read.
	start atomic.Int64
	// ends is when the connection's lifetime ends (monoNow; 0: never),
	// expired that it has, guarded by reg.mu once set (see flagExpired).
	ends    atomic.Int64
	expired atomic.Bool
	// wrote counts the bytes written to the connection, wroteAtBegin as
	// the last traced statement began (see nodeTracer.began): equal, none
	// of that statement has left yet.
	wrote, wroteAtBegin atomic.Int64
	// reader is what the connection's frontend reads the server through,
	// set when the frontend is made (see boundedFrontend); nil under a
	// frontend of the user's.
	reader *serverReader
}

// Read and Write report a failure of the connection of a pool (not a
// timeout, which pgconn makes of a context's end) as a *NodeLostError,
// which still unwraps to the network's error.
func (c *trackedConn) Read(b []byte) (int, error) {
	c.takeUnframed()
	k, err := c.Conn.Read(b)
	if k > 0 && c.interrupted.Load() {
		c.interrupted.Store(false)
	}
	if err != nil && c.reg.n != nil && c.live.Load() {
		err = c.lost(err)
	}
	return k, err
}

func (c *trackedConn) Write(b []byte) (int, error) {
	c.takeUnframed() // followed by another write: it was no close alert
	if c.wired.Load() && !c.framed.Load() {
		c.unframed(b)
	}
	k, err := c.Conn.Write(b)
	if k > 0 {
		c.wrote.Add(int64(k))
	}
	if err != nil && c.reg.n != nil && c.live.Load() {
		err = c.lost(err)
		if le, ok := err.(*NodeLostError); ok {
			le.unsent = c.wrote.Load() == c.wroteAtBegin.Load()
		}
	}
	return k, err
}

func (c *trackedConn) lost(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// A context's end, which pgconn tells by this error's type: it
		// closes the connection, after a cancel request (see
		// settleCancels).
		c.interrupted.Store(true)
		return err
	}
	c.netErr.CompareAndSwap(nil, &err)
	return &NodeLostError{Addr: c.reg.n.cfg.Addr, Role: c.role(), MayHaveRun: true, Cut: c.cut.Load(), Err: err}
}

func (r *connRegistry) track(c net.Conn) net.Conn { return r.add(c, false) }

// trackCancel tracks a connection dialed for a cancel request.
func (r *connRegistry) trackCancel(c net.Conn) net.Conn { return r.add(c, true) }

func (r *connRegistry) add(c net.Conn, cancelReq bool) net.Conn {
	tc := &trackedConn{Conn: c, reg: r, cancelReq: cancelReq}
	if sc, ok := c.(syscall.Conn); ok {
		tc.raw, _ = sc.SyscallConn()
	}
	r.mu.Lock()
	if r.conns == nil {
		r.conns = make(map[*trackedConn]struct{})
	}
	r.conns[tc] = struct{}{}
	r.mu.Unlock()
	return tc
}

func (c *trackedConn) Close() error {
	c.unframedPending.Store(false) // TLS's close alert
	c.once.Do(func() {
		c.reg.mu.Lock()
		delete(c.reg.conns, c)
		if c.expired.Load() {
			c.reg.n.nExpired.Add(-1) // counted by flagExpired
		}
		c.reg.mu.Unlock()
	})
	return c.Conn.Close()
}

func (r *connRegistry) closeAll() int {
	return r.closeIf(func(*trackedConn) bool { return true })
}

// closeIf cuts the connections for which cut returns true, and returns how
// many.
func (r *connRegistry) closeIf(cut func(*trackedConn) bool) int {
	r.mu.Lock()
	conns := make([]*trackedConn, 0, len(r.conns))
	for c := range r.conns {
		if cut(c) {
			conns = append(conns, c)
		}
	}
	r.mu.Unlock()
	for _, c := range conns {
		c.cut.Store(true)
		c.Close()
	}
	return len(conns)
}

// count returns how many of the connections f holds true for.
func (r *connRegistry) count(f func(*trackedConn) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := 0
	for c := range r.conns {
		if f(c) {
			k++
		}
	}
	return k
}

func (r *connRegistry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}
