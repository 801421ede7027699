package testcluster

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a running replicated PostgreSQL cluster. Its methods are safe for
// concurrent use, but chaos operations on the same node are serialized.
type Cluster struct {
	opts Options

	// Read-only after Start.
	dir    string
	binDir string
	cred   *syscall.Credential

	// orchestrator, when set by a backend, owns the topology: Master,
	// Failover and Rejoin ask it instead of the cluster's own bookkeeping.
	orchestrator orchestrator

	// nodes is every node, in the order they were made; AddNode and
	// RemoveNode replace it (never modify it) under c.mu and nodesMu, so
	// a reader holding either may range over it. The start functions set
	// it before anything else runs.
	nodesMu sync.Mutex
	nodes   []*Node
	made    int // nodes ever made, for the next one's name; guarded by nodesMu

	mu        sync.Mutex // guards the bookkeeping below
	master    *Node
	syncNames []string // the nodes the master's synchronous_standby_names lists
	stopped   bool
}

// backends start a cluster's nodes, by Backend. A start function fills
// c.nodes (index 0 the first master), sets c.master and c.syncNames, and
// returns once every replica streams and the synchronous ones show sync.
var backends = map[Backend]func(c *Cluster, ctx context.Context) error{
	BackendLocal: (*Cluster).startLocal,
}

// orchestrator is a backend that manages failover itself (Patroni).
type orchestrator interface {
	master() *Node // the current master as the orchestrator sees it, or nil
	failover(ctx context.Context, to *Node) error
	rejoin(ctx context.Context, old *Node) error
}

// nodeDriver is what a backend does for one node.
type nodeDriver interface {
	addr() string       // the address clients use (through faults)
	directAddr() string // an address that bypasses faults where the backend can
	running() bool
	start(ctx context.Context) error
	stop() error
	kill() error
	pause() error
	resume() error
	partition() error
	heal() error
	setLatency(d time.Duration) error
	faultState() Faults // the chaos operations in force
	primaryConnInfo(app string) string
	makeStandby(primary *Node) error
	rewind(ctx context.Context, source *Node) error
	logTail(n int) string
	teardown() error // immediate shutdown, for Cluster.Stop
	close() error
}

// Start starts a cluster and returns once every replica streams from the
// master and the synchronous ones show sync_state 'sync'. On error nothing
// is left running. The caller must call Stop.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts}
	begin := time.Now()
	start, ok := backends[opts.Backend]
	if !ok {
		return nil, fmt.Errorf("testcluster: backend %q is not available in this build", opts.Backend)
	}
	if err := start(c, ctx); err != nil {
		c.Stop()
		return nil, err
	}
	master := c.nodes[0]
	c.mu.Lock() // a backend's goroutine (Patroni's follower) may set it already
	if c.master != nil {
		master = c.master // an attached compose project's may be another
	}
	c.mu.Unlock()
	for _, n := range c.nodes {
		n.standby.Store(n != master)
	}
	c.made = len(c.nodes)
	opts.Logf("testcluster: %d nodes up in %s: %s", len(c.nodes), time.Since(begin).Round(time.Millisecond), c.layout())
	return c, nil
}

// New starts a cluster for a test and stops it when the test ends. A test
// that fails gets the tail of every node's server log. A compose project it
// attached to (Options.ComposeProject) is converged instead and left
// running.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("testcluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.all() {
				t.Logf("testcluster: last lines of %s's server log:\n%s", n.name, n.drv.logTail(60))
			}
		}
		if c.attachedCompose() {
			// The project outlives the test: hand the next one a whole
			// cluster.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			err := c.Converge(ctx)
			cancel()
			if err != nil {
				t.Errorf("testcluster: converge the compose project %s: %v", c.ComposeProject(), err)
			}
		}
		if err := c.Stop(); err != nil {
			t.Errorf("testcluster: stop: %v", err)
		}
	})
	return c
}

// DSN is a multi-host URL naming every node, through its fault proxy, in
// node order.
func (c *Cluster) DSN() string {
	nodes := c.all()
	hosts := make([]string, len(nodes))
	for i, n := range nodes {
		hosts[i] = n.Addr()
	}
	return c.dsn(hosts)
}

func (c *Cluster) dsn(hosts []string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(c.opts.User, c.opts.Password),
		Host:     strings.Join(hosts, ","),
		Path:     "/" + c.opts.Database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// PgBouncer is the mode of the PgBouncer in front of every node, or
// PgBouncerNone.
func (c *Cluster) PgBouncer() PgBouncerMode { return c.opts.PgBouncer }

// Nodes returns every node, in the order they were made (AddNode appends,
// RemoveNode removes); index 0 is the first master.
func (c *Cluster) Nodes() []*Node { return slices.Clone(c.all()) }

// all returns the node list, not to be modified.
func (c *Cluster) all() []*Node {
	c.nodesMu.Lock()
	defer c.nodesMu.Unlock()
	return c.nodes
}

// Master returns the node that is master now, per the cluster's own
// bookkeeping (Start, Promote, Failover).
func (c *Cluster) Master() *Node {
	if c.orchestrator != nil {
		return c.orchestrator.master()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.master
}

// SyncReplicas returns the nodes the master's synchronous_standby_names
// names, per the cluster's bookkeeping.
func (c *Cluster) SyncReplicas() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, name := range c.syncNames {
		out = append(out, c.node(name))
	}
	return out
}

// Replicas returns every node but the master, per the cluster's bookkeeping.
func (c *Cluster) Replicas() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, n := range c.all() {
		if n != c.master {
			out = append(out, n)
		}
	}
	return out
}

// makeDir makes the cluster's directory, marked with its owner (this
// process), after removing what clusters of dead test processes left in
// the same base directory.
func (c *Cluster) makeDir() error {
	base := c.opts.Dir
	if base == "" {
		base = DefaultDir()
	}
	// Only base: other directories (the system's temporary directory,
	// /dev/shm) are shared with other users and other programs' clusters.
	sweepStale(base, c.cred)
	dir, err := os.MkdirTemp(base, "pgxha-testcluster-")
	if err != nil {
		return fmt.Errorf("testcluster: temp dir: %w", err)
	}
	c.dir = dir
	if err := markOwner(dir); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	return nil
}

// fastDir holds cluster directories when it is a RAM file system with room:
// creating and copying data directories there is several times faster.
const fastDir = "/dev/shm"

// DefaultDir is where clusters are made when Options.Dir is empty:
// PGXHA_TESTCLUSTER_DIR if set, else /dev/shm when it is a writable RAM file
// system with at least 2 GiB free, else the system temporary directory.
func DefaultDir() string {
	if d := os.Getenv("PGXHA_TESTCLUSTER_DIR"); d != "" {
		return d
	}
	if ramDirWithRoom(fastDir, 2<<30) {
		return fastDir
	}
	return os.TempDir()
}

// Dir is the cluster's temporary directory (data directories and logs).
// It is removed by Stop.
func (c *Cluster) Dir() string { return c.dir }

func (c *Cluster) node(name string) *Node {
	for _, n := range c.all() {
		if n.name == name {
			return n
		}
	}
	return nil
}

func (c *Cluster) layout() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for _, n := range c.all() {
		role := "async"
		switch {
		case n == c.master:
			role = "master"
		case slices.Contains(c.syncNames, n.name):
			role = "sync"
		}
		parts = append(parts, fmt.Sprintf("%s=%s@%s", n.name, role, n.Addr()))
	}
	return strings.Join(parts, " ")
}

// Failover promotes to and repoints every other running replica to it,
// keeping the number of synchronous replicas: replicas that were synchronous
// stay so, and the places of the old master or of a lost replica go to the
// running replicas in node order. The old master is left alone (it may be
// dead, hung, partitioned, or still running: see Rejoin). A replica that
// cannot follow the new timeline (it had received WAL past the promotion
// point) is rewound with pg_rewind. Failover returns once every repointed
// replica streams from to.
func (c *Cluster) Failover(ctx context.Context, to *Node) error {
	if c.orchestrator != nil {
		return c.orchestrator.failover(ctx, to)
	}
	c.mu.Lock()
	old, prevSync := c.master, slices.Clone(c.syncNames)
	c.mu.Unlock()
	if to == old {
		return fmt.Errorf("testcluster: failover: %s is already the master", to.name)
	}
	begin := time.Now()
	if err := to.Promote(ctx); err != nil {
		return fmt.Errorf("testcluster: failover: %w", err)
	}
	var others, repointed []*Node
	for _, n := range c.all() {
		if n != to && n != old && n.drv.running() {
			others = append(others, n)
		}
	}
	// A replica that replayed past the point where the new master's
	// timeline forked off cannot follow it: rewind it at once instead of
	// waiting for it to fail to.
	fork, forkErr := c.forkPoint(ctx, to)
	for _, n := range others {
		if forkErr == nil && c.replayedPast(ctx, n, fork) {
			c.opts.Logf("testcluster: %s replayed past %s, where %s's timeline forked off; rewinding it", n.name, fork, to.name)
			if err := c.rebuildStandby(ctx, n, to); err != nil {
				return fmt.Errorf("testcluster: failover: %w", err)
			}
			continue
		}
		if err := c.repoint(ctx, n, to); err != nil {
			return fmt.Errorf("testcluster: failover: repoint %s: %w", n.name, err)
		}
		repointed = append(repointed, n)
	}
	for _, n := range repointed {
		waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := c.waitFollows(waitCtx, n, to)
		cancel()
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return fmt.Errorf("testcluster: failover: %w", err)
		}
		c.opts.Logf("testcluster: %s does not follow %s (%v); rewinding it", n.name, to.name, err)
		if err := c.rebuildStandby(ctx, n, to); err != nil {
			return fmt.Errorf("testcluster: failover: %w", err)
		}
	}
	// Keep the layout: previous sync replicas first, then the others.
	var candidates []string
	for _, name := range prevSync {
		if n := c.node(name); n != to && slices.Contains(others, n) {
			candidates = append(candidates, name)
		}
	}
	for _, n := range others {
		if !slices.Contains(candidates, n.name) {
			candidates = append(candidates, n.name)
		}
	}
	k := min(c.opts.SyncReplicas, len(candidates))
	if err := c.setSync(ctx, to, candidates[:k]); err != nil {
		return fmt.Errorf("testcluster: failover: %w", err)
	}
	c.opts.Logf("testcluster: failover from %s to %s in %s: %s", old.name, to.name, time.Since(begin).Round(time.Millisecond), c.layout())
	return nil
}

// Rejoin brings a former master (crashed, stopped, or still running after a
// split brain) back as an asynchronous replica of the current master: it is
// stopped if running, rewound with pg_rewind, configured as a standby and
// started. Rejoin returns once it streams.
func (c *Cluster) Rejoin(ctx context.Context, old *Node) error {
	if c.orchestrator != nil {
		return c.orchestrator.rejoin(ctx, old)
	}
	master := c.Master()
	if old == master {
		return fmt.Errorf("testcluster: rejoin: %s is the master", old.name)
	}
	begin := time.Now()
	if err := c.rebuildStandby(ctx, old, master); err != nil {
		return fmt.Errorf("testcluster: rejoin: %w", err)
	}
	c.opts.Logf("testcluster: %s rejoined as a replica of %s in %s", old.name, master.name, time.Since(begin).Round(time.Millisecond))
	return nil
}

// Converge undoes every fault and brings every node back into the cluster
// around the current master (Master): partitions healed, latency removed,
// paused nodes resumed, the master started if it is down; every other node
// that does not stream from the master on its timeline is made to: a
// stopped replica is started, and one that still does not follow (an
// orphan of an old master, a replica of a stale one), a former master
// (crashed, stopped, or still running after another was promoted) are
// rebuilt as replicas of the master, with pg_rewind as Rejoin does. Then
// the number of synchronous replicas is restored to Options.SyncReplicas
// (the nodes that were synchronous first, then the others in node order).
// Converge returns once every replica streams and the synchronous ones show
// sync. It is for the local and compose backends; Patroni converges on its
// own.
func (c *Cluster) Converge(ctx context.Context) error {
	if c.orchestrator != nil {
		return fmt.Errorf("testcluster: converge: the %s backend manages its nodes itself", c.opts.Backend)
	}
	begin := time.Now()
	master := c.Master()
	for _, n := range c.all() {
		// Quietly: most of these undo nothing.
		n.opMu.Lock()
		err := errors.Join(n.drv.heal(), n.drv.setLatency(0))
		if err == nil && n.drv.running() {
			err = n.drv.resume()
		}
		n.opMu.Unlock()
		if err != nil {
			return fmt.Errorf("testcluster: converge: %s: %w", n.name, err)
		}
	}
	if !master.Running() {
		if err := master.Start(); err != nil {
			return fmt.Errorf("testcluster: converge: %w", err)
		}
	}
	var tli int
	if err := master.queryRow(ctx, "SELECT "+currentTimeline, &tli); err != nil {
		return fmt.Errorf("testcluster: converge: timeline of %s: %w", master.name, err)
	}
	for _, n := range c.all() {
		if n == master {
			continue
		}
		if !n.Running() && n.standby.Load() {
			if err := n.Start(); err != nil {
				return fmt.Errorf("testcluster: converge: %w", err)
			}
		}
		if n.Running() && n.standby.Load() && c.streamsFrom(ctx, n, master) {
			// A replica that was fine, restarted or healed streams again
			// within moments.
			waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := c.waitFollowsMaster(waitCtx, n, master, tli)
			cancel()
			if err == nil {
				continue
			}
			if ctx.Err() != nil {
				return fmt.Errorf("testcluster: converge: %w", err)
			}
			c.opts.Logf("testcluster: converge: %v; rebuilding it", err)
		}
		if err := c.rebuildStandby(ctx, n, master); err != nil {
			return fmt.Errorf("testcluster: converge: %w", err)
		}
	}
	c.mu.Lock()
	prevSync := slices.Clone(c.syncNames)
	c.mu.Unlock()
	var candidates []string
	for _, name := range prevSync {
		if name != master.name {
			candidates = append(candidates, name)
		}
	}
	for _, n := range c.all() {
		if n != master && !slices.Contains(candidates, n.name) {
			candidates = append(candidates, n.name)
		}
	}
	k := min(c.opts.SyncReplicas, len(candidates))
	if err := c.setSync(ctx, master, candidates[:k]); err != nil {
		return fmt.Errorf("testcluster: converge: %w", err)
	}
	c.opts.Logf("testcluster: converged on %s in %s: %s", master.name, time.Since(begin).Round(time.Millisecond), c.layout())
	return nil
}

// streamsFrom reports whether replica n is configured to stream from
// master (a replica left behind by a promotion still names the old one).
func (c *Cluster) streamsFrom(ctx context.Context, n, master *Node) bool {
	var conninfo string
	err := n.queryRow(ctx, "SHOW primary_conninfo", &conninfo)
	return err == nil && conninfo == master.drv.primaryConnInfo(n.name)
}

// waitFollowsMaster waits until replica n streams on timeline tli and
// master lists it as streaming.
func (c *Cluster) waitFollowsMaster(ctx context.Context, n, master *Node, tli int) error {
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	last := "no walreceiver"
	for {
		var status string
		var received int
		err := n.queryRow(ctx, "SELECT status, coalesce(received_tli, 0) FROM pg_stat_wal_receiver", &status, &received)
		switch {
		case err == nil && status == "streaming" && received == tli:
			var listed bool
			err = master.queryRow(ctx, "SELECT EXISTS (SELECT FROM pg_stat_replication WHERE application_name = '"+n.name+"' AND state = 'streaming')", &listed)
			if err == nil && listed {
				return nil
			}
			last = fmt.Sprintf("streaming on timeline %d, not listed by %s", tli, master.name)
		case err == nil:
			last = fmt.Sprintf("walreceiver %s on timeline %d", status, received)
		case !errors.Is(err, pgx.ErrNoRows):
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s does not stream from %s on timeline %d (%s)", n.name, master.name, tli, last)
		case <-ticker.C:
		}
	}
}

// rebuildStandby stops n, rewinds it from primary, makes it a standby of
// primary, starts it and waits until it streams.
func (c *Cluster) rebuildStandby(ctx context.Context, n, primary *Node) error {
	if n.drv.running() {
		if err := n.drv.stop(); err != nil {
			return fmt.Errorf("stop %s: %w", n.name, err)
		}
	}
	// pg_rewind reads the source's timeline from its control file, which a
	// promotion updates only at the next checkpoint.
	if err := primary.exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint on %s: %w", primary.name, err)
	}
	rc, canReclone := n.drv.(interface {
		reclone(ctx context.Context, source *Node) error
	})
	reclone := func(why string, err error) error {
		c.opts.Logf("testcluster: %s%s: %v; copying it afresh from %s", why, n.name, err, primary.name)
		if err := rc.reclone(ctx, primary); err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
		return nil
	}
	rewound := true
	if err := n.drv.rewind(ctx, primary); err != nil {
		// pg_rewind gives up on some histories (a replica that received
		// WAL of a timeline the source never had, cut at an awkward
		// place); a fresh copy of the source always works.
		if !canReclone {
			return fmt.Errorf("%s: %w", n.name, err)
		}
		if err := reclone("", err); err != nil {
			return err
		}
		rewound = false
	}
	err := c.startStandby(ctx, n, primary)
	if err != nil && rewound && canReclone && ctx.Err() == nil {
		// pg_rewind found "no rewind required" for a replica whose WAL
		// file of the old timeline the new one's history contradicts
		// ("WAL location ... belongs to timeline 1, but previous
		// recovered WAL file came from timeline 2"): recovery gives up.
		// A fresh copy of the source always starts.
		if err := reclone("start after pg_rewind of ", err); err != nil {
			return err
		}
		err = c.startStandby(ctx, n, primary)
	}
	if err != nil {
		return err
	}
	if err := c.waitFollows(ctx, n, primary); err != nil {
		return err
	}
	return c.waitStreaming(ctx, primary, []string{n.name}, nil)
}

// startStandby makes n a standby of primary and starts it.
func (c *Cluster) startStandby(ctx context.Context, n, primary *Node) error {
	if err := n.drv.makeStandby(primary); err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	n.standby.Store(true)
	if err := n.drv.start(ctx); err != nil {
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	return nil
}

// waitFollows waits until replica n receives WAL on primary's current
// timeline. A replica that got WAL past the point where primary's timeline
// forked connects, fails and retries: it shows in pg_stat_replication now and
// then, but its walreceiver stays on the old timeline.
func (c *Cluster) waitFollows(ctx context.Context, n, primary *Node) error {
	var tli int
	if err := primary.queryRow(ctx, "SELECT "+currentTimeline, &tli); err != nil {
		return fmt.Errorf("timeline of %s: %w", primary.name, err)
	}
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	last := "no walreceiver"
	for {
		var status string
		var received int
		err := n.queryRow(ctx, "SELECT status, coalesce(received_tli, 0) FROM pg_stat_wal_receiver", &status, &received)
		switch {
		case err == nil && status == "streaming" && received == tli:
			return nil
		case err == nil:
			last = fmt.Sprintf("walreceiver %s on timeline %d", status, received)
		case !errors.Is(err, pgx.ErrNoRows):
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s does not follow %s on timeline %d: %w (%s)", n.name, primary.name, tli, ctx.Err(), last)
		case <-ticker.C:
		}
	}
}

// currentTimeline is an SQL expression for the timeline a master writes on:
// the first 8 hex digits of its current WAL file's name.
const currentTimeline = `('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int`

// lsnText matches an LSN as PostgreSQL writes it.
var lsnText = regexp.MustCompile(`^[0-9A-F]{1,8}/[0-9A-F]{1,8}$`)

// forkPoint returns where the timeline of primary, a promoted node, forked
// off its parent: the last line of its timeline history file.
func (c *Cluster) forkPoint(ctx context.Context, primary *Node) (string, error) {
	var history string
	err := primary.queryRow(ctx, `SELECT pg_read_file('pg_wal/' ||
		lpad(upper(to_hex(`+currentTimeline+`)), 8, '0') || '.history')`, &history)
	if err != nil {
		return "", err
	}
	lines := strings.Split(strings.TrimSpace(history), "\n")
	fields := strings.Fields(lines[len(lines)-1])
	if len(fields) < 2 || !lsnText.MatchString(fields[1]) {
		return "", fmt.Errorf("timeline history of %s: unexpected %q", primary.name, history)
	}
	return fields[1], nil
}

// replayedPast reports whether replica n replayed WAL beyond lsn.
func (c *Cluster) replayedPast(ctx context.Context, n *Node, lsn string) bool {
	var past bool
	err := n.queryRow(ctx, "SELECT coalesce(pg_last_wal_replay_lsn() > '"+lsn+"'::pg_lsn, false)", &past)
	return err == nil && past
}

// repoint makes the running replica n stream from primary, with a reload.
func (c *Cluster) repoint(ctx context.Context, n, primary *Node) error {
	conn, err := c.connect(ctx, n.drv.directAddr())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = "+quoteConfValue(primary.drv.primaryConnInfo(n.name))); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "SELECT pg_reload_conf()")
	return err
}

// setSync makes names the master's synchronous standbys and waits until each
// shows sync_state 'sync'.
func (c *Cluster) setSync(ctx context.Context, master *Node, names []string) error {
	value := ""
	if len(names) > 0 {
		value = fmt.Sprintf("FIRST %d (%s)", len(names), strings.Join(names, ", "))
	}
	conn, err := c.connect(ctx, master.drv.directAddr())
	if err != nil {
		return fmt.Errorf("set synchronous_standby_names on %s: %w", master.name, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = "+quoteConfValue(value)); err != nil {
		return fmt.Errorf("set synchronous_standby_names on %s: %w", master.name, err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return err
	}
	c.mu.Lock()
	c.master, c.syncNames = master, slices.Clone(names)
	c.mu.Unlock()
	var running []string
	for _, name := range names {
		if c.node(name).drv.running() {
			running = append(running, name)
		}
	}
	return c.waitStreaming(ctx, master, running, running)
}

// waitStreaming polls master's pg_stat_replication until every name streams
// and every name in sync shows sync_state sync or quorum.
func (c *Cluster) waitStreaming(ctx context.Context, master *Node, names, sync []string) error {
	if len(names) == 0 {
		return nil
	}
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	var last string
	for {
		var err error
		if conn == nil {
			conn, err = c.connect(ctx, master.drv.directAddr())
		}
		if err == nil {
			var states map[string]string
			states, err = replicationStates(ctx, conn)
			if err == nil {
				missing := waitingFor(states, names, sync)
				if len(missing) == 0 {
					return nil
				}
				last = fmt.Sprintf("waiting for %s (pg_stat_replication on %s: %v)", strings.Join(missing, ", "), master.name, states)
			} else {
				conn.Close(context.Background())
				conn = nil
			}
		}
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replicas did not stream from %s: %w; %s", master.name, ctx.Err(), last)
		case <-ticker.C:
		}
	}
}

// replicationStates maps application_name to "state/sync_state".
func replicationStates(ctx context.Context, conn *pgx.Conn) (map[string]string, error) {
	rows, err := conn.Query(ctx, "SELECT application_name, state, sync_state FROM pg_stat_replication")
	if err != nil {
		return nil, err
	}
	states := map[string]string{}
	for rows.Next() {
		var app, state, syncState string
		if err := rows.Scan(&app, &state, &syncState); err != nil {
			rows.Close()
			return nil, err
		}
		states[app] = state + "/" + syncState
	}
	return states, rows.Err()
}

func waitingFor(states map[string]string, names, sync []string) []string {
	var missing []string
	for _, name := range names {
		st := states[name]
		state, syncState, _ := strings.Cut(st, "/")
		switch {
		case state != "streaming":
			missing = append(missing, name)
		case slices.Contains(sync, name) && syncState != "sync" && syncState != "quorum":
			missing = append(missing, name)
		}
	}
	return missing
}

// connect opens an administrative connection to addr.
func (c *Cluster) connect(ctx context.Context, addr string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(c.dsn([]string{addr}))
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// Stop shuts every node down (immediate shutdown: the data is thrown away),
// closes the fault proxies and removes the cluster's directory. A compose
// project it attached to is left as it is, running. It is safe to call more
// than once.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	c.mu.Unlock()

	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, n := range c.all() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := n.drv.teardown()
			if err2 := n.drv.close(); err == nil {
				err = err2
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", n.name, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if c.dir != "" {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
