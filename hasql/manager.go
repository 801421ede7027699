package hasql

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgxha/pgxha/balancer"
)

// Manager keeps a pgx pool per node of a replicated PostgreSQL cluster and
// hands out connections to the node that has the role asked for. It checks
// every node in the background on a connection of its own, keeps an immutable
// snapshot of roles that acquires read without a lock, and re-routes when a
// node fails or a replica is promoted. A Manager is safe for concurrent use.
type Manager struct {
	// Read-only after NewWithConfig.
	cfg   *Config
	log   *slog.Logger
	nodes []*node
	tel   *telemetry
	// countInUse: the balancer reads each node's in-use count, kept up to
	// date on every acquire and release only then.
	countInUse bool

	// snap is the routing snapshot, replaced (never changed) by the check
	// goroutines; acquires load it lock-free.
	snap atomic.Pointer[snapshot]

	// fastSince is when fast checking began (unix nanoseconds), 0 when
	// checks run at CheckInterval.
	fastSince atomic.Int64

	// epoch is when the Manager started: checks fall due on multiples of
	// the interval since then (see untilTick).
	epoch time.Time

	// The manager owns its goroutines' context: a caller's context never
	// stops a check that others rely on.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closed    chan struct{}

	// mu guards every node's view, history and routingKey. It is held for
	// bookkeeping only: no I/O, no blocking call while it is held.
	mu            sync.Mutex
	history       lsnHistory
	routingKey    []routingEntry
	splitBrain    string // the nodes of the split brain last reported, "" if none
	everHadMaster bool
	// What the last rebuild derived roles from (see rebuildLocked).
	built builtFrom
}

// New parses connString (see ParseConfig), applies opts and makes a
// Manager. It returns once every node has been checked once, CheckTimeout
// has passed, or ctx has ended, whichever comes first; nodes that are down do
// not make it fail (see Nodes and WaitReady). Close it when done.
func New(ctx context.Context, connString string, opts ...Option) (*Manager, error) {
	cfg, err := ParseConfig(connString)
	if err != nil {
		return nil, err
	}
	for _, o := range opts {
		if err := o(cfg); err != nil {
			return nil, err
		}
	}
	return NewWithConfig(ctx, cfg)
}

// NewWithConfig makes a Manager from a Config made by ParseConfig. See New.
func NewWithConfig(ctx context.Context, cfg *Config) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.Copy()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Manager{
		cfg:        cfg,
		log:        cfg.Logger,
		closed:     make(chan struct{}),
		countInUse: balancer.ReadsInUse(cfg.Balancer),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.epoch = time.Now()
	tel, err := newTelemetry(m)
	if err != nil {
		m.cancel()
		return nil, err
	}
	m.tel = tel
	for i, nc := range cfg.Nodes {
		n, err := newNode(ctx, m, i, nc)
		if err != nil {
			m.cancel()
			for _, made := range m.nodes {
				made.pool.Close()
			}
			m.tel.close()
			return nil, err
		}
		m.nodes = append(m.nodes, n)
	}
	m.snap.Store(&snapshot{changed: make(chan struct{})})

	checked := make(chan struct{}, len(m.nodes))
	for _, n := range m.nodes {
		m.wg.Add(1)
		go n.run(checked)
	}
	timer := time.NewTimer(cfg.CheckTimeout + 100*time.Millisecond)
	defer timer.Stop()
	for range m.nodes {
		select {
		case <-checked:
		case <-timer.C:
			return m, nil
		case <-ctx.Done():
			return m, nil
		}
	}
	return m, nil
}

// Close stops the checks, closes every pool and waits for every goroutine
// the Manager started. Like pgxpool.Pool.Close it waits until connections
// that were acquired have been released. Acquires waiting for a node return
// ErrClosed. Close is safe to call more than once.
func (m *Manager) Close() {
	m.closeOnce.Do(func() {
		close(m.closed)
		m.cancel()
		m.wg.Wait()
		for _, n := range m.nodes {
			n.pool.Close()
		}
		m.tel.close()
		old := m.snap.Swap(&snapshot{changed: make(chan struct{}), closed: true})
		close(old.changed)
	})
}

// Config returns a copy of the Manager's configuration.
func (m *Manager) Config() *Config { return m.cfg.Copy() }

// Nodes returns the manager's view of every node, in connection string
// order.
func (m *Manager) Nodes() []NodeStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]NodeStatus, len(m.nodes))
	for i, n := range m.nodes {
		out[i] = n.statusLocked()
	}
	return out
}

// Changed returns a channel that is closed the next time the manager's
// routing view changes: a node goes down or up, a role changes, a replica
// crosses the default lag limits. Call it again after each change.
func (m *Manager) Changed() <-chan struct{} { return m.snap.Load().changed }

// WaitReady waits until the cluster has at least masters masters (0 or 1)
// and replicas replicas up, or ctx ends. Its error says what is missing and
// why each node is not counted.
func (m *Manager) WaitReady(ctx context.Context, masters, replicas int) error {
	if masters < 0 || masters > 1 || replicas < 0 || replicas > len(m.nodes) {
		return fmt.Errorf("hasql: WaitReady(%d, %d): want 0 or 1 master and 0 to %d replicas", masters, replicas, len(m.nodes))
	}
	for {
		s := m.snap.Load()
		if s.closed {
			return ErrClosed
		}
		haveMasters := 0
		if s.master != nil {
			haveMasters = 1
		}
		haveReplicas := len(s.set(setAllReplicas).nodes)
		if haveMasters >= masters && haveReplicas >= replicas {
			return nil
		}
		select {
		case <-s.changed:
		case <-ctx.Done():
			nodes := m.Nodes()
			parts := make([]string, len(nodes))
			for i, n := range nodes {
				parts[i] = n.Addr + " " + describe(n)
			}
			return fmt.Errorf("hasql: not ready (%w): want %d master(s) and %d replica(s), have %d and %d: %s",
				ctx.Err(), masters, replicas, haveMasters, haveReplicas, strings.Join(parts, "; "))
		}
	}
}

// AcquireMaster returns a connection to the master from its pool. With no
// master it waits for one (without polling: it wakes when the manager's view
// changes) until ctx ends, then returns a *NoNodeError that unwraps to
// ErrNoMaster, ctx's error and each node's last error. During a split brain
// it returns a *SplitBrainError at once. Release the connection when done.
func (m *Manager) AcquireMaster(ctx context.Context) (*pgxpool.Conn, error) {
	return m.acquireFast(ctx, targetMaster, nil)
}

// acquireFast is the path of an acquire from a prepared candidate set (the
// master, the replicas, the sync replicas) while telemetry is off: the set,
// the balancer's pick, the pool; no allocation, no lock. Anything unusual (no
// candidate, an error, a split brain, options that need a set of their own,
// telemetry on) goes to acquire, which handles it. o is not retained: the
// slow path takes a copy, so that a caller's options on its stack stay
// there.
func (m *Manager) acquireFast(ctx context.Context, t target, o *replicaOptions) (*pgxpool.Conn, error) {
	if s := m.snap.Load(); s.masterErr == nil && !m.tel.timed() && (o == nil || !o.custom()) {
		i := setMaster
		if t == targetReplica {
			if i = s.replicaSet(o); len(s.sets[i].nodes) == 0 && s.fallsBack(o) {
				i = setMaster
			}
		}
		if cs := &s.sets[i]; len(cs.nodes) > 0 {
			n := cs.nodes[cs.pick()]
			conn, err := n.pool.Acquire(ctx)
			if err == nil {
				if m.countInUse {
					n.inUse.Add(1)
				}
				return conn, nil
			}
			if ctx.Err() == nil && m.ctx.Err() == nil {
				n.acquireFailed(err)
				return m.acquireExcluding(ctx, t, copyOptions(o), n, err)
			}
		}
	}
	return m.acquire(ctx, t, copyOptions(o))
}

// copyOptions returns a copy of o on the heap (nil for nil).
func copyOptions(o *replicaOptions) *replicaOptions {
	if o == nil {
		return nil
	}
	c := *o
	return &c
}

// AcquireReplica returns a connection to a replica that satisfies opts,
// picked by the balancer. With no qualifying replica it falls back to the
// master with FallbackToMaster, and otherwise waits like AcquireMaster, then
// returns a *NoNodeError that unwraps to ErrNoReplica.
func (m *Manager) AcquireReplica(ctx context.Context, opts ...ReplicaOption) (*pgxpool.Conn, error) {
	if len(opts) == 0 {
		return m.acquireFast(ctx, targetReplica, nil)
	}
	var o replicaOptions
	applyOptions(&o, opts)
	if o.minLSN != 0 {
		return m.acquireMinLSN(ctx, copyOptions(&o))
	}
	return m.acquireFast(ctx, targetReplica, &o)
}

type target int

const (
	targetMaster target = iota
	targetReplica
)

func (t target) String() string {
	if t == targetMaster {
		return "master"
	}
	return "replica"
}

func (t target) err() error {
	if t == targetMaster {
		return ErrNoMaster
	}
	return ErrNoReplica
}

// acquire picks a node for t and acquires a connection from its pool. A
// node whose pool fails is reported (its check runs at once) and the next
// candidate is tried, at most a few times per node.
func (m *Manager) acquire(ctx context.Context, t target, o *replicaOptions) (*pgxpool.Conn, error) {
	var start time.Time
	if m.tel.timed() {
		start = time.Now()
	}
	ctx, span := m.tel.startAcquire(ctx, t)
	conn, n, err := m.acquireLoop(ctx, t, o, span, nil, nil)
	m.tel.acquired(ctx, t, n, start, span, err)
	return conn, err
}

// acquireExcluding is acquire after failed's pool failed with failErr.
func (m *Manager) acquireExcluding(ctx context.Context, t target, o *replicaOptions, failed *node, failErr error) (*pgxpool.Conn, error) {
	var start time.Time
	if m.tel.timed() {
		start = time.Now()
	}
	ctx, span := m.tel.startAcquire(ctx, t)
	conn, n, err := m.acquireLoop(ctx, t, o, span, []*node{failed}, fmt.Errorf("%s: %w", failed.cfg.Addr, failErr))
	m.tel.acquired(ctx, t, n, start, span, err)
	return conn, err
}

func (m *Manager) acquireLoop(ctx context.Context, t target, o *replicaOptions, span trace.Span, excluded []*node, lastErr error) (*pgxpool.Conn, *node, error) {
	maxFailures := 2 * len(m.nodes)
	for failures := 0; failures <= maxFailures; {
		s := m.snap.Load()
		if s.closed {
			return nil, nil, ErrClosed
		}
		set, err := m.candidates(s, t, o, excluded)
		if err != nil {
			return nil, nil, err
		}
		if len(set.nodes) == 0 {
			if len(excluded) > 0 {
				// Every candidate failed: give the checks a moment to
				// change the view, then try them all again.
				if !m.waitChange(ctx, s, m.cfg.CheckTimeout) {
					if ctx.Err() == nil && m.ctx.Err() == nil {
						return nil, nil, fmt.Errorf("hasql: acquire %s: %w", t, lastErr)
					}
				}
				excluded = excluded[:0]
				if err := m.acquireDone(ctx, t); err != nil {
					return nil, nil, err
				}
				continue
			}
			select {
			case <-s.changed:
				if span != nil {
					span.AddEvent(EventViewChanged)
				}
				continue
			case <-m.closed:
				return nil, nil, ErrClosed
			case <-ctx.Done():
				return nil, nil, m.noNode(t, ctx.Err())
			}
		}
		n := set.nodes[set.pick()]
		conn, err := n.pool.Acquire(ctx)
		if err == nil {
			if m.countInUse {
				n.inUse.Add(1)
			}
			return conn, n, nil
		}
		if ctx.Err() != nil {
			return nil, n, fmt.Errorf("hasql: acquire %s from %s: %w", t, n.cfg.Addr, err)
		}
		if m.ctx.Err() != nil {
			return nil, n, ErrClosed
		}
		n.acquireFailed(err)
		lastErr = fmt.Errorf("%s: %w", n.cfg.Addr, err)
		excluded = append(excluded, n)
		failures++
	}
	return nil, nil, fmt.Errorf("hasql: acquire %s: gave up after %d failed attempts: %w", t, maxFailures+1, lastErr)
}

func (m *Manager) acquireDone(ctx context.Context, t target) error {
	select {
	case <-m.closed:
		return ErrClosed
	case <-ctx.Done():
		return m.noNode(t, ctx.Err())
	default:
		return nil
	}
}

// waitChange waits up to d for the snapshot after s; it reports whether the
// view changed.
func (m *Manager) waitChange(ctx context.Context, s *snapshot, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-s.changed:
		return true
	case <-timer.C:
	case <-ctx.Done():
	case <-m.closed:
	}
	return false
}

func (m *Manager) noNode(t target, cause error) error {
	return &NoNodeError{Target: t.err(), Cause: cause, Nodes: m.Nodes()}
}
