package hasql

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgxha/pgxha/hasql/internal/topology"
)

// Manager keeps a pgx pool per node of a replicated PostgreSQL cluster and
// hands out connections to the node that has the role asked for. It checks
// every node in the background on a connection of its own, keeps an immutable
// snapshot of roles that acquires read without a lock, and re-routes when a
// node fails or a replica is promoted. A Manager is safe for concurrent use.
type Manager struct {
	// Read-only after NewWithConfig.
	cfg *Config
	log *slog.Logger
	tel *telemetry

	// snap is the routing snapshot, replaced (never changed) by the check
	// goroutines; acquires load it lock-free.
	snap atomic.Pointer[snapshot]

	// fastSince is when fast checking began (unix nanoseconds), 0 when
	// checks run at CheckInterval.
	fastSince atomic.Int64

	// aheadWoke is when a token of a timeline the Manager has not seen
	// last asked every node for a check (unix nanoseconds; see
	// wakeForAhead).
	aheadWoke atomic.Int64

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

	// mu guards the node set (nodes), every node's view, history and
	// routingKey. It is held for bookkeeping only: no I/O, no blocking call
	// while it is held. list is the node set for readers without the lock;
	// both are replaced, never changed in place, when the set changes.
	mu         sync.Mutex
	nodes      []*node
	byID       map[topology.ID]*node
	list       atomic.Pointer[[]*node]
	nextIndex  int
	discovery  discoveryState
	routingKey []routingEntry
	// core makes every decision routing safety rests on (see
	// internal/topology and view.go).
	core *topology.Core
	// traceBuf holds the decision trace written under mu, until
	// flushTrace writes it out (see WithDecisionTrace).
	traceBuf bytes.Buffer
	traceErr error
	traceMu  sync.Mutex // serializes the writes of the trace

	closedFlag atomic.Bool // Close has begun

	histories historyCache // timeline histories, for After (see after.go)
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
		cfg:    cfg,
		log:    cfg.Logger,
		closed: make(chan struct{}),
	}
	tc := topology.Config{SystemID: cfg.SystemIdentifier, FlapCount: cfg.FlapCount, FlapWindow: cfg.FlapWindow, FlapCooldown: cfg.FlapCooldown}
	if cfg.DecisionTrace != nil {
		tc.Record = topology.WriteTrace(&m.traceBuf, &m.traceErr)
	}
	m.core = topology.New(tc)
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.epoch = time.Now()
	tel, err := newTelemetry(m)
	if err != nil {
		m.cancel()
		return nil, err
	}
	m.tel = tel
	m.snap.Store(&snapshot{changed: make(chan struct{})})
	m.warnUnprotectedDiscovery()
	// The first set is the discoverer's first answer, as reconcile takes
	// the later ones (an address once, a member that cannot be a node left
	// out, the tags with it), or, when it has none that can be, the
	// connection string's nodes, any of which that cannot be a node stops
	// New.
	nodes := m.firstDiscovered(ctx, m.startDiscovery(ctx))
	if len(nodes) == 0 {
		for _, nc := range cfg.Nodes {
			n, err := m.makeNode(ctx, nc)
			if err != nil {
				m.cancel()
				for _, made := range nodes {
					made.closePool()
				}
				m.wg.Wait()
				m.tel.close()
				return nil, err
			}
			nodes = append(nodes, n)
		}
	}
	m.mu.Lock()
	m.setNodesLocked(nodes)
	m.applyLocked(nil)
	m.mu.Unlock()
	m.flushTrace()
	if m.discovery.ready != nil {
		close(m.discovery.ready)
	}

	checked := make(chan struct{}, len(nodes))
	for _, n := range nodes {
		m.wg.Add(1)
		go n.run(checked)
	}
	timer := time.NewTimer(cfg.CheckTimeout + 100*time.Millisecond)
	defer timer.Stop()
	for range nodes {
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
// that were acquired have been released: a statement in flight on a node
// that hangs is no longer cut by the checks once Close has stopped them,
// and Close waits for it as long as the node hangs, so give statements a
// context with a deadline. Acquires waiting for a node, and connects being
// made, return ErrClosed. Close is safe to call more than once.
func (m *Manager) Close() {
	m.closeOnce.Do(func() {
		m.closedFlag.Store(true)
		// The last snapshot: closed, and its changed channel closed too, so
		// that Changed after Close never blocks. Acquires that load it
		// return ErrClosed.
		last := &snapshot{changed: make(chan struct{}), closed: true}
		close(last.changed)
		m.mu.Lock()
		old := m.snap.Swap(last)
		m.mu.Unlock()
		close(old.changed)
		close(m.closed)
		m.cancel()
		m.wg.Wait()
		// The nodes close together: each gives the cancel requests of its
		// interrupted statements up to CheckTimeout (see closePool).
		var closing sync.WaitGroup
		for _, n := range m.nodesNow() {
			closing.Add(1)
			go func() {
				defer closing.Done()
				n.closePool()
			}()
		}
		closing.Wait()
		m.tel.close()
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

// Closed reports whether Close has begun: from then on Changed returns a
// closed channel and every acquire ErrClosed.
func (m *Manager) Closed() bool { return m.snap.Load().closed }

// Changed returns a channel that is closed the next time the manager's
// routing view changes: a node goes down or up, a role changes, a replica
// crosses the default lag limits. Call it again after each change. After
// Close it returns a closed channel.
func (m *Manager) Changed() <-chan struct{} { return m.snap.Load().changed }

// WaitReady waits until the cluster has at least masters masters (0 or 1)
// and replicas replicas up, or ctx ends. Its error says what is missing and
// why each node is not counted.
func (m *Manager) WaitReady(ctx context.Context, masters, replicas int) error {
	if masters < 0 || masters > 1 || replicas < 0 {
		return fmt.Errorf("hasql: WaitReady(%d, %d): want 0 or 1 master and 0 or more replicas", masters, replicas)
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
