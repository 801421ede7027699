package hasql

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgxha/pgxha/discovery"
)

// The acquire pipeline. Every way to get a connection (AcquireMaster,
// AcquireReplica, the Queriers, DB, Listen) goes through it, in this order:
//
//  1. candidates: the snapshot's prepared set for the target and options, or
//     a set of their own for options that filter by live values (MaxLag,
//     MinLSN), minus nodes whose pool just failed;
//  2. pick: the balancer's Picker for that set;
//  3. pool acquire on the node picked (bounded where it probes a replica);
//  4. re-validate: the node still has the role in the snapshot current now,
//     since an acquire may have waited inside the pool while the node lost
//     it (a connection to a demoted master must never be handed out);
//  5. record: telemetry (the in-use count is kept by acquire and the
//     pool's release, whatever the outcome).
//
// acquireFast does all five for the common case (no telemetry, options that
// only choose among the prepared sets) without an allocation or a lock;
// anything else, and every failure, goes to acquireSlow, which loops over
// the same steps within bounds.

// AcquireMaster returns a connection to the master from its pool. With no
// master it waits for one (without polling: it wakes when the manager's view
// changes) until ctx ends, then returns a *NoNodeError that unwraps to
// ErrNoMaster and ctx's error (and, when the only writable nodes were stale
// masters, to a *StaleMasterError). During a split brain it returns a
// *SplitBrainError at once. Release the connection when done.
func (m *Manager) AcquireMaster(ctx context.Context) (*pgxpool.Conn, error) {
	conn, _, err := m.acquireFast(ctx, targetMaster, nil)
	return conn, err
}

// AcquireReplica returns a connection to a replica that satisfies opts,
// picked by the balancer. With no qualifying replica it falls back to the
// master with FallbackToMaster, and otherwise waits like AcquireMaster, then
// returns a *NoNodeError that unwraps to ErrNoReplica.
func (m *Manager) AcquireReplica(ctx context.Context, opts ...ReplicaOption) (*pgxpool.Conn, error) {
	if len(opts) == 0 {
		conn, _, err := m.acquireFast(ctx, targetReplica, nil)
		return conn, err
	}
	if len(opts) == 1 && int(opts[0].kind) < len(singleOptions) && singleOptions[opts[0].kind] != nil {
		conn, _, err := m.acquireFast(ctx, targetReplica, singleOptions[opts[0].kind])
		return conn, err
	}
	var o replicaOptions
	applyOptions(&o, opts)
	conn, _, err := m.acquireFast(ctx, targetReplica, &o)
	return conn, err
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

// acquireFast is the pipeline for a prepared candidate set (the master, the
// replicas, the sync replicas) while telemetry is off: no allocation, no
// lock. It returns the node that served. o is not retained: the slow path
// takes a copy, so that a caller's options on its stack stay there.
func (m *Manager) acquireFast(ctx context.Context, t target, o *replicaOptions) (*pgxpool.Conn, *node, error) {
	if s := m.snap.Load(); s.masterErr == nil && !m.tel.timed() && (o == nil || !o.custom()) {
		if cs := s.prepared(t, o); len(cs.nodes) > 0 {
			n := cs.nodes[cs.pick()]
			// n.acquire by hand (the hot path), except that a full pool
			// goes the slow way, which bounds the wait (see boundAcquire),
			// as does a context without deadline when the pool's own waits
			// may outlast AcquireTimeout (see node.poolWithin).
			if !n.poolWithin && !hasDeadline(ctx) {
				return m.acquireSlow(ctx, t, copyOptions(o), nil, nil, nil)
			}
			if n.inUse.Add(1) <= n.maxConns {
				conn, err := n.pool.Acquire(ctx)
				if err == nil {
					if m.snap.Load() == s || m.stillRoutes(n, t, o) {
						return conn, n, nil
					}
					conn.Release() // the node lost the role while the acquire waited
				} else {
					n.inUse.Add(-1)
					if ctx.Err() == nil && !n.removed.Load() && m.ctx.Err() == nil {
						err = scrubConnect(err) // as node.acquire's
						n.acquireFailed(err)
						return m.acquireSlow(ctx, t, copyOptions(o), n, err, s)
					}
				}
			} else {
				n.inUse.Add(-1) // the pool is full: the slow path bounds the wait
			}
		}
	}
	return m.acquireSlow(ctx, t, copyOptions(o), nil, nil, nil)
}

// prepared returns the snapshot's prepared set for t and options that need
// no set of their own: the master, or the replicas (sync ones with SyncOnly,
// or PreferSync while any), falling back to the master with
// FallbackToMaster.
func (s *snapshot) prepared(t target, o *replicaOptions) *candidateSet {
	if o == nil { // inlined: no call on the commonest paths
		return &s.sets[setOf[t&1]]
	}
	return s.preparedWith(t, o)
}

// setOf is the prepared set of a target without options.
var setOf = [2]int{targetMaster: setMaster, targetReplica: setReplicas}

// preparedWith is prepared for options.
func (s *snapshot) preparedWith(t target, o *replicaOptions) *candidateSet {
	i := setMaster
	if t == targetReplica {
		if i = s.replicaSet(o); len(s.sets[i].nodes) == 0 && s.fallsBack(o) {
			i = setMaster
		}
	}
	return &s.sets[i]
}

// copyOptions returns a copy of o on the heap (nil for nil).
func copyOptions(o *replicaOptions) *replicaOptions {
	if o == nil {
		return nil
	}
	c := *o
	return &c
}

// acquireSlow is the pipeline's general loop, with telemetry: failed, if
// not nil, is a node whose pool just failed with failErr, picked from the
// snapshot from.
func (m *Manager) acquireSlow(ctx context.Context, t target, o *replicaOptions, failed *node, failErr error, from *snapshot) (*pgxpool.Conn, *node, error) {
	var start time.Time
	if m.tel.timed() {
		start = time.Now()
	}
	ctx, cancel := m.boundAcquire(ctx)
	defer cancel()
	ctx, span := m.tel.startAcquire(ctx, t)
	var excluded []*node
	if failed != nil {
		excluded = []*node{failed}
		failErr = fmt.Errorf("%s: %w", failed.cfg.Addr, failErr)
	}
	conn, n, err := m.acquireLoop(ctx, t, o, span, excluded, failErr, from)
	m.tel.acquired(ctx, t, n, start, span, err)
	return conn, n, err
}

// acquireLoop runs the pipeline until a connection is handed out, the
// context ends or the Manager closes. A node whose pool fails is reported
// (its check runs at once) and the next candidate is tried, at most twice
// per node before giving up; a node that lost its role while the acquire
// waited in its pool is just picked again from the new view, at most as
// often. With MinLSN, replicas whose last check is behind are asked on a
// connection (see probeMinLSN). The nodes in excluded failed when picked
// from the snapshot from.
func (m *Manager) acquireLoop(ctx context.Context, t target, o *replicaOptions, span trace.Span, excluded []*node, lastErr error, from *snapshot) (*pgxpool.Conn, *node, error) {
	if o != nil && o.hasAfter {
		return m.acquireAfter(ctx, t, o, span, excluded, lastErr, from)
	}
	maxFailures := 2 * len(m.nodesNow())
	var lsnWait *minLSNWait
	if t == targetReplica && o != nil && o.minLSN != 0 {
		lsnWait = newMinLSNWait(o)
		defer lsnWait.stop()
	}
	moved := 0
	for failures, lost := 0, 0; failures <= maxFailures && lost <= maxFailures; {
		s := m.snap.Load()
		if s.closed {
			return nil, nil, ErrClosed
		}
		set, err := m.candidates(s, t, o, excluded)
		if err != nil {
			return nil, nil, err
		}
		if len(set.nodes) == 0 {
			if lsnWait != nil {
				conn, n, err := m.probeMinLSN(ctx, s, o, lsnWait)
				if conn != nil || err != nil {
					return conn, n, err
				}
				continue
			}
			if len(excluded) > 0 {
				if s != from {
					// The view changed since the failed pick, before the
					// wait below began: the failures belong to a view that
					// is gone (the master whose connection was refused is
					// down, and none is elected yet; or it is back). Pick
					// again from this one, waiting for a candidate as an
					// acquire that found none does.
					excluded, from = excluded[:0], nil
					continue
				}
				// Every candidate failed: give the checks a moment to
				// change the view, then try them all again.
				if !m.waitChange(ctx, s, m.cfg.CheckTimeout) {
					if ctx.Err() == nil && m.ctx.Err() == nil {
						return nil, nil, fmt.Errorf("hasql: acquire %s: %w", t, lastErr)
					}
				}
				excluded = excluded[:0]
				if err := m.acquireDone(ctx, t, o, lastErr); err != nil {
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
				ne := m.noNode(t, o, ctxErr(ctx))
				ne.Last = lastErr
				return nil, nil, ne
			}
		}
		n := set.nodes[set.pick()]
		// A wait in a full pool gives up when a new view takes n out of
		// the set this pick was made from (the failed nodes still left
		// out: a read that fell back to the master waits for it).
		left := slices.Clone(excluded)
		conn, err := n.acquireWhile(ctx, func() bool {
			cs, err := m.candidates(m.snap.Load(), t, o, left)
			return err == nil && slices.Contains(cs.nodes, n)
		})
		if err == nil {
			if m.snap.Load() == s || m.stillRoutes(n, t, o) {
				return conn, n, nil
			}
			conn.Release()
			lost++
			continue
		}
		if ctx.Err() != nil {
			if errors.Is(err, ctx.Err()) {
				err = ctxErr(ctx) // hasql_acquire_timeout's bound says so
			}
			if lastErr != nil {
				// The context ended in a try after one that failed: the
				// failure is what the caller acts on (a server refusing
				// connections, a password rejected).
				return nil, n, fmt.Errorf("hasql: acquire %s from %s: %w; the try before it: %w", t, n.cfg.Addr, err, lastErr)
			}
			return nil, n, fmt.Errorf("hasql: acquire %s from %s: %w", t, n.cfg.Addr, err)
		}
		if m.ctx.Err() != nil {
			return nil, n, ErrClosed
		}
		if err == errNodeLeft {
			lost++ // the node left the set while the acquire waited in its pool
			continue
		}
		if err == errServesNoMore {
			// The view changed under a wait in a full pool: each takes a
			// change of the view, not a spin, and the acquire's context
			// bounds them (hasql_acquire_timeout without a deadline).
			if moved++; moved > maxMoves {
				return nil, nil, fmt.Errorf("hasql: acquire %s: gave up after the view changed %d times under its wait: the roles kept changing", t, maxMoves)
			}
			continue
		}
		n.acquireFailed(err)
		lastErr = fmt.Errorf("%s: %w", n.cfg.Addr, err)
		excluded = append(excluded, n)
		from = s
		failures++
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("the roles kept changing while the acquire waited")
	}
	return nil, nil, fmt.Errorf("hasql: acquire %s: gave up after %d attempts: %w", t, maxFailures+1, lastErr)
}

// acquireAfter is acquireLoop for options with After: the token is
// resolved against the cluster's timeline (see resolveAfter), and a
// connection found while the cluster moved to another timeline (an acquire
// that waited through a failover for a replica, or for a master) is given
// back and the token resolved again: the new timeline may have forked
// before the token's write.
func (m *Manager) acquireAfter(ctx context.Context, t target, o *replicaOptions, span trace.Span, excluded []*node, lastErr error, from *snapshot) (*pgxpool.Conn, *node, error) {
	base := *o
	for range 100 { // each round follows a change of the cluster's timeline
		r := base
		tl, err := m.resolveAfter(ctx, &r)
		if err != nil {
			return nil, nil, err
		}
		conn, n, err := m.acquireLoop(ctx, t, &r, span, excluded, lastErr, from)
		// The failed pick the acquire came with belongs to the first
		// round's view (and acquireLoop reuses the slice's array).
		excluded, from = nil, nil
		if err != nil || tl == 0 {
			return conn, n, err
		}
		if _, now := m.clusterLine(); now == tl {
			return conn, n, nil
		}
		conn.Release()
	}
	return nil, nil, fmt.Errorf("hasql: After: the cluster's timeline kept changing while the token %s was resolved", base.tokens())
}

// stillRoutes re-validates a node after an acquire from its pool: whether
// the snapshot current now still routes t (with o) to it. Called only when
// the snapshot changed while the acquire ran.
func (m *Manager) stillRoutes(n *node, t target, o *replicaOptions) bool {
	s := m.snap.Load()
	if s.closed {
		return false
	}
	if t == targetMaster {
		return s.master == n && s.masterErr == nil
	}
	if o != nil && o.minLSN != 0 {
		// A replica found by asking it (its last check may be behind
		// MinLSN): it must still qualify by every other option (SyncOnly,
		// WithTag, lag limits), like the replicas probeMinLSN asks.
		if s.master == n && s.masterErr == nil && o.fallback {
			return true
		}
		others := *o
		others.minLSN, others.fallback = 0, false
		o = &others
	}
	set, err := m.candidates(s, t, o, nil)
	return err == nil && slices.Contains(set.nodes, n)
}

// acquireDone returns the error that ends an acquire whose context or
// Manager is done (last: the last error met on a node's pool), nil while
// neither is.
func (m *Manager) acquireDone(ctx context.Context, t target, o *replicaOptions, last error) error {
	select {
	case <-m.closed:
		return ErrClosed
	case <-ctx.Done():
		ne := m.noNode(t, o, ctxErr(ctx))
		ne.Last = last
		return ne
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

func (m *Manager) noNode(t target, o *replicaOptions, cause error) *NoNodeError {
	nodes := m.Nodes()
	var behind map[string]bool // replicas kept from reads after a position (see behindTimeline)
	if o != nil && o.minLSN != 0 {
		s := m.snap.Load()
		for _, n := range m.nodesNow() {
			if !o.notBehind(n, s) {
				if behind == nil {
					behind = make(map[string]bool)
				}
				behind[n.cfg.Addr] = true
			}
		}
	}
	why := make([]string, len(nodes))
	for i, st := range nodes {
		why[i] = m.whyNot(st, t, o, behind[st.Addr])
	}
	ne := &NoNodeError{Target: t.err(), Cause: cause, Nodes: nodes, Why: why}
	if s := m.snap.Load(); s.staleErr != nil && (t == targetMaster || o != nil && o.fallback) {
		ne.Stale = s.staleErr
	}
	return ne
}

// whyNot says in a few words why a node did not serve an acquire for t
// with options o.
func (m *Manager) whyNot(st NodeStatus, t target, o *replicaOptions, behindTimeline bool) string {
	switch {
	case st.LastError == ErrClosed:
		return "closed"
	case st.LastCheck.IsZero():
		return "not checked yet"
	case !st.Up:
		return "down: " + errString(st.LastError)
	case st.SameAs != "":
		return "the same server as " + st.SameAs
	}
	if r := roleReason(st); r != "" {
		return r
	}
	if st.Role == RoleUnknown {
		return "role unknown"
	}
	if t == targetMaster {
		if st.Role == RoleMaster {
			return "master"
		}
		return "a replica (" + st.Role.String() + ")"
	}
	if st.Role == RoleMaster {
		if o != nil && o.fallback && o.minLSN != 0 {
			return "the master (FallbackToMaster takes it once MinLSNWait is over)"
		}
		if o == nil || !o.fallback {
			return "the master (no FallbackToMaster)"
		}
		return "the master"
	}
	var why []string
	if st.Suspect {
		why = append(why, "suspect: "+errString(st.LastError))
	}
	if st.Damped {
		why = append(why, "flapping: no reads until "+st.DampedUntil.Format(time.RFC3339))
	}
	if discovery.IsTrue(st.Tags[discovery.TagNoLoadBalance]) {
		why = append(why, "tagged "+discovery.TagNoLoadBalance)
	}
	if o != nil {
		for _, kv := range o.tags {
			if v, ok := st.Tags[kv[0]]; !ok || v != kv[1] {
				why = append(why, "no tag "+kv[0]+"="+kv[1])
			}
		}
	}
	syncOnly := o != nil && o.syncOnly
	if syncOnly && st.Role != RoleSyncReplica {
		if st.SyncUnknown != "" {
			why = append(why, "sync state unknown: "+st.SyncUnknown)
		} else {
			why = append(why, "not a sync replica ("+st.Role.String()+")")
		}
	}
	maxBytes, maxLag := m.cfg.MaxLagBytes, m.cfg.MaxLag
	if o != nil && o.lagSet {
		maxBytes, maxLag = o.maxLagBytes, o.maxLag
	}
	if maxBytes > 0 || maxLag > 0 {
		switch {
		case !st.LagKnown:
			why = append(why, "lag unknown, and a lag limit is set")
		default:
			if maxBytes > 0 && st.LagBytes > maxBytes {
				why = append(why, "behind by "+strconv.FormatInt(st.LagBytes, 10)+" bytes, over the limit of "+strconv.FormatInt(maxBytes, 10))
			}
			if maxLag > 0 && st.Lag > maxLag {
				why = append(why, "lag "+st.Lag.Round(time.Millisecond).String()+", over the limit of "+maxLag.String())
			}
		}
	}
	if o != nil && o.minLSN != 0 && st.LSN < o.minLSN {
		why = append(why, "replayed to "+st.LSN.String()+", behind MinLSN "+o.minLSN.String())
	}
	if o != nil && o.system != 0 && st.SystemID != 0 && st.SystemID != o.system {
		why = append(why, "of system identifier "+strconv.FormatUint(st.SystemID, 10)+", the token's is "+strconv.FormatUint(o.system, 10))
	}
	if behindTimeline {
		why = append(why, "shows timeline "+uitoa(st.Timeline)+", older than the cluster's, and no walreceiver to say what it replays: no read after a position")
	}
	kind := st.Role.String() + " replica" // "sync replica", "replica" (its sync state unknown)
	if st.Role == RoleReplica {
		kind = "replica"
	}
	if len(why) == 0 {
		return kind + ", qualified"
	}
	return kind + ": " + strings.Join(why, "; ")
}

// fallBackToMaster is a MinLSN acquire's fallback to the master, past its
// MinLSNWait: an acquire of the master for as long as there is one. When
// the view has none (its pool refused, and its checks found it down) it
// returns nothing, and the replicas are asked on (see probeMinLSN): one that
// replays the position serves before a master is back.
func (m *Manager) fallBackToMaster(ctx context.Context, w *minLSNWait) (*pgxpool.Conn, *node, error) {
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watched := make(chan struct{})
	// Owned by this acquire: it ends when the acquire does.
	go func() {
		defer close(watched)
		for {
			s := m.snap.Load()
			if !s.closed && (s.master == nil || s.masterErr != nil) {
				cancel()
				return
			}
			select {
			case <-s.changed:
			case <-mctx.Done():
				return
			}
		}
	}()
	conn, n, err := m.acquireLoop(mctx, targetMaster, nil, nil, nil, nil, nil)
	cancel()
	<-watched
	if err != nil && ctx.Err() == nil && mctx.Err() != nil && m.ctx.Err() == nil {
		// The master is gone: see above. What its pool met, if anything,
		// is what a NoNodeError says last.
		if ne := (*NoNodeError)(nil); errors.As(err, &ne) && ne.Last != nil {
			w.last = ne.Last
		}
		return nil, nil, nil
	}
	return conn, n, err
}

// minLSNWait is the state of a MinLSN acquire across rounds of probes.
type minLSNWait struct {
	deadline time.Time // when FallbackToMaster takes the master
	others   replicaOptions
	pause    time.Duration
	timer    *time.Timer
	last     error // the last error a probe met on a replica (see NoNodeError.Last)
}

func newMinLSNWait(o *replicaOptions) *minLSNWait {
	w := &minLSNWait{deadline: time.Now().Add(o.minLSNWait), others: *o, pause: time.Millisecond}
	w.others.minLSN, w.others.fallback = 0, false
	return w
}

func (w *minLSNWait) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}

// probeMinLSN runs when no replica's last check shows o.minLSN: it asks the
// other qualifying replicas on a connection how far they replayed, each
// probe bounded by CheckTimeout and, with FallbackToMaster, by the time left
// until the master is taken, so that a hung replica never holds the caller.
// After o.minLSNWait it takes the master with FallbackToMaster. It returns
// nothing (no connection, no error) when the caller should look again after
// a pause (backing off from 1ms to 50ms).
func (m *Manager) probeMinLSN(ctx context.Context, s *snapshot, o *replicaOptions, w *minLSNWait) (*pgxpool.Conn, *node, error) {
	set, _ := m.candidates(s, targetReplica, &w.others, nil)
	// With no master to fall back to, the replicas are asked on past the
	// wait: one that replays the position serves before a master is back.
	master := s.master != nil && s.masterErr == nil
	for i := range set.nodes {
		n := set.nodes[(set.pick()+i)%len(set.nodes)]
		if !o.notBehind(n, s) {
			continue
		}
		limit := m.cfg.CheckTimeout
		if o.fallback && master {
			limit = min(limit, max(time.Until(w.deadline), time.Millisecond))
		}
		conn, replay, tl, err := m.probeReplay(ctx, n, limit)
		if err != nil {
			if ctx.Err() != nil {
				ne := m.noNode(targetReplica, o, ctxErr(ctx))
				ne.Last = w.last
				return nil, nil, ne
			}
			if m.ctx.Err() != nil {
				return nil, nil, ErrClosed
			}
			w.last = fmt.Errorf("%s: %w", n.cfg.Addr, err)
			continue
		}
		if replay >= o.minLSN && o.line != 0 && !o.onLine(tl) {
			// After's position, read on another timeline than the one
			// the tokens were resolved against (a replica repointed to a
			// master the view has not seen yet, which may have forked
			// before the write): not the write. Its check tells the rest.
			n.probeWake()
			conn.Release()
			continue
		}
		if replay >= o.minLSN {
			n.probedReplay(replay, tl)
			if m.stillRoutes(n, targetReplica, o) {
				return conn, n, nil
			}
		}
		conn.Release()
	}
	if o.fallback && master && !time.Now().Before(w.deadline) {
		conn, n, err := m.fallBackToMaster(ctx, w)
		if conn != nil || err != nil {
			return conn, n, err
		}
		// No master any more: the replicas are asked on.
	}
	if w.timer == nil {
		w.timer = time.NewTimer(w.pause)
	} else {
		w.timer.Reset(w.pause)
	}
	select {
	case <-w.timer.C:
	case <-s.changed:
	case <-ctx.Done():
		ne := m.noNode(targetReplica, o, ctxErr(ctx))
		ne.Last = w.last
		return nil, nil, ne
	case <-m.closed:
		return nil, nil, ErrClosed
	}
	limit := 50 * time.Millisecond
	if !master && !time.Now().Before(w.deadline) {
		// Asking on while there is no master: the replicas are asked by
		// every read that waits, so less often (a round wakes at once
		// when the view changes).
		limit = 500 * time.Millisecond
	}
	w.pause = min(2*w.pause, limit)
	return nil, nil, nil
}

// probeReplay acquires a connection from n's pool and reads how far n
// replayed, and the timeline it replays (0 when it cannot tell), all
// within limit. A probe that runs out of time has the node checked at
// once.
func (m *Manager) probeReplay(ctx context.Context, n *node, limit time.Duration) (*pgxpool.Conn, LSN, uint32, error) {
	pctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	conn, err := n.acquire(pctx)
	if err != nil {
		switch {
		case ctx.Err() != nil || err == errNodeLeft:
		case pctx.Err() != nil && n.inUse.Load() >= n.maxConns:
			// The probe's own bound ran out while every connection of
			// the pool was held: busy, not failing. A check may tell,
			// no more often than once an interval (see probeWake).
			n.probeWake()
		default:
			n.acquireFailed(err)
		}
		return nil, 0, 0, err
	}
	replay, line, err := readReplay(pctx, conn)
	if err != nil {
		conn.Release() // a query cut short by pctx closed the connection
		if ctx.Err() == nil {
			n.probeWake()
		}
		return nil, 0, 0, err
	}
	return conn, replay, line, nil
}

// readReplay asks a replica on conn for its replayed position and the
// timeline its walreceiver streams (0: none shows; see replayTimelineSQL).
// A question left unanswered within ctx cuts the connection (see
// cutUnanswered).
func readReplay(ctx context.Context, conn *pgxpool.Conn) (LSN, uint32, error) {
	var replay int64
	var tl *int64
	if err := conn.QueryRow(ctx, replayTimelineSQL).Scan(&replay, &tl); err != nil {
		cutUnanswered(conn, err)
		return 0, 0, err
	}
	var line uint32
	if tl != nil && *tl > 0 && *tl <= math.MaxUint32 {
		line = uint32(*tl)
	}
	return LSN(replay), line, nil
}

// cutUnanswered cuts the network connection under conn when err is a
// question of pgxha's own (a probe of a replica's position) that the
// server left unanswered within its bound: pgx would otherwise wait up to
// 15 s more for the server before it lets the connection go, and Close
// with it.
func cutUnanswered(conn *pgxpool.Conn, err error) {
	if !pgconn.Timeout(err) && !errors.Is(err, context.DeadlineExceeded) {
		return
	}
	if tc := trackedOf(conn.Conn()); tc != nil {
		tc.cut.Store(true)
		tc.Close()
	}
}

// errNodeLeft is what an acquire from a node's pool returns when the node
// left the node set while the acquire waited there: the caller picks again
// from the current set.
var errNodeLeft = errors.New("hasql: the node left the node set")

// errServesNoMore is what an acquire waiting in a full pool returns when a
// new view takes the node out of the set it was picked from (see
// acquireWhile): the caller picks again.
var errServesNoMore = errors.New("hasql: the node no longer serves the acquire")

// maxMoves bounds how often one acquire picks again because the view
// changed under its wait in a full pool.
const maxMoves = 100

// acquire takes a connection from n's pool. n.inUse counts it from now
// until its release (see nodeTracer.TraceRelease), or until the acquire
// fails: every path that acquires goes through here (acquireFast through
// its own copy of the first branch), so the count the balancers read never
// drifts. An acquire beyond the pool's MaxConns may
// wait for a connection to be released: it also ends when n leaves the set
// or the Manager closes (errNodeLeft, or the pool's error when the Manager
// closed), so that no acquire stays behind in the pool of a node that is
// gone. Below MaxConns it waits at most for a connection being made, and
// allocates nothing. A failed connect's error comes back without the
// password in its Config (scrubConnect), for every path that keeps or
// returns it.
func (n *node) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	return n.acquireWhile(ctx, nil)
}

// acquireWhile is acquire for an acquire that wants n only while serves
// reports that n serves it (serves nil: while n is in the set): a wait
// in a full pool also ends (errServesNoMore) when a new view says n no
// longer serves it, as when the master lost its role while every
// connection of its pool was held.
func (n *node) acquireWhile(ctx context.Context, serves func() bool) (*pgxpool.Conn, error) {
	if n.inUse.Add(1) <= n.maxConns {
		conn, err := n.pool.Acquire(ctx)
		if err != nil {
			n.inUse.Add(-1)
			if ctx.Err() == nil && n.removed.Load() {
				return nil, errNodeLeft // its pool closed
			}
			return nil, scrubConnect(err)
		}
		return conn, nil
	}
	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(n.ctx, cancel)
	var lost atomic.Bool
	watched := make(chan struct{})
	if serves != nil {
		// Owned by this acquire: it ends when the acquire does.
		go func() {
			for {
				s := n.m.snap.Load()
				if !serves() {
					lost.Store(true)
					cancel()
					return
				}
				select {
				case <-s.changed:
				case <-wctx.Done():
					return
				case <-watched:
					return
				}
			}
		}()
	}
	n.waiting.Add(1) // see reconcileInUse
	conn, err := n.pool.Acquire(wctx)
	n.waiting.Add(-1)
	close(watched)
	stop()
	cancel()
	if err != nil {
		n.inUse.Add(-1)
		if ctx.Err() == nil && n.removed.Load() {
			return nil, errNodeLeft
		}
		if ctx.Err() == nil && lost.Load() {
			return nil, errServesNoMore
		}
		return nil, scrubConnect(err)
	}
	return conn, nil
}
