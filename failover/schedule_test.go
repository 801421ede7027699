package failover_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// The randomized fault schedule: a bank of accounts under RunInTx transfers,
// with fewer pool connections than workers, readers checking replicas, and
// faults drawn at random; afterwards every invariant of the design's
// "Safety invariants" that a client can observe is checked. The seed decides
// the schedule (faults, their targets, holds) and the transfers; timing does
// the rest.
//
//	go test -race -run TestFaultSchedule ./failover/                           # short: a handful of faults
//	go test -race -run TestFaultSchedule ./failover/ -chaos.seed=42            # again with that seed
//	go test -race -run TestFaultSchedule ./failover/ -chaos.faults=orphan,hang # these faults
//	PGXHA_SOAK=10m go test -race -run TestFaultSchedule -timeout 30m ./failover/ # long
var (
	chaosSeed   = flag.Uint64("chaos.seed", 0, "seed of TestFaultSchedule (default: $PGXHA_CHAOS_SEED, else from the clock)")
	chaosFaults = flag.String("chaos.faults", "", "TestFaultSchedule's short schedule: these faults, comma-separated ("+strings.Join(faultFlags[:], ", ")+"), instead of random ones")
	chaosSoak   = flag.Duration("chaos.soak", 0, "run TestFaultSchedule's long schedule for this long (default: $PGXHA_SOAK)")
)

const (
	schedAccounts     = 20
	schedBalance      = 1000
	schedWorkers      = 6
	schedReaders      = 2
	schedPoolConns    = 2 // per node: fewer than the workers
	schedShortFaults  = 6
	schedTransferWait = 10 * time.Second // RunInTx's context per transfer
	// detachGrace is how long after a replica is left behind (orphaned on
	// a dead master's timeline, or following a stale master) the Manager
	// may still send it reads: its checks must see the change first (a
	// check interval, a check timeout, and room on a busy machine).
	detachGrace = 3 * time.Second
)

type faultKind int

const (
	fCrash faultKind = iota
	fStop
	fHang
	fPartition
	fRogue
	fRogueThenKill
	fDouble
	fReplicaCrash
	fReplicaPartition
	fOrphan
	fOrphanAhead
	nFaultKinds
)

var faultNames = [...]string{
	"master crash, failover", "master clean stop, failover", "master hang, failover, the old master resumes",
	"master partition, failover, the partition heals", "promotion of the sync replica while the master runs",
	"promotion while the master runs, then the new master crashes and restarts",
	"master crash, failover, the new master crashes, failover again",
	"replica crash", "replica partition", "master crash, only the sync replica promoted: the async one orphaned",
	"sync replica hangs, master crash, only the sync replica promoted: the async one orphaned ahead of it",
}

// faultFlags name the kinds for -chaos.faults.
var faultFlags = [...]string{"crash", "stop", "hang", "partition", "rogue", "rogue-kill", "double",
	"replica-crash", "replica-partition", "orphan", "orphan-ahead"}

func (k faultKind) String() string { return faultNames[k] }

// transfer is one RunInTx call and what came of it.
type transfer struct {
	id            int64
	src, dst, amt int
	start, end    time.Time
	err           error
	node          string // where the acknowledged attempt ran
	tli           int
	runs          int
}

// attempt is one run of a transfer's function that got as far as its
// INSERT: where it ran and on which timeline.
type attempt struct {
	id       int64
	start    time.Time // the attempt's acquire began later than this
	node     string
	port     int
	tli      int
	insertAt time.Time
}

// read is one replica read.
type read struct {
	start, end time.Time
	node       string
	sum, n     int64
	err        error
}

// detached is a window in which a node is known to follow no current
// master: no read may be served by it from from+detachGrace to until.
type detached struct {
	node        string
	from, until time.Time
	why         string
	view        string // the Manager's nodes at the first read that broke it
}

type round struct {
	kind       faultKind
	begin, end time.Time
	steps      []string
}

type schedule struct {
	t     *testing.T
	ctx   context.Context
	c     *testcluster.Cluster
	m     *hasql.Manager
	rng   *rand.Rand
	seed  uint64
	begin time.Time

	nextID atomic.Int64

	mu        sync.Mutex
	transfers []*transfer
	attempts  []attempt
	reads     []read
	ryw       []string // read-your-writes violations
	stalls    []string // waits for the client to recover that ran out
	windows   []detached
	rounds    []*round
}

func (s *schedule) since(at time.Time) string {
	return "+" + at.Sub(s.begin).Round(time.Millisecond).String()
}

func (s *schedule) step(r *round, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	r.steps = append(r.steps, s.since(time.Now())+" "+msg)
	s.mu.Unlock()
	s.t.Logf("schedule: %s", msg)
}

func scheduleSeed(t *testing.T) uint64 {
	if *chaosSeed != 0 {
		return *chaosSeed
	}
	if v := os.Getenv("PGXHA_CHAOS_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "PGXHA_CHAOS_SEED")
		return seed
	}
	return uint64(time.Now().UnixNano())
}

// soakDuration is how long the long schedule runs; 0 for the short one.
func soakDuration(t *testing.T) time.Duration {
	if *chaosSoak > 0 {
		return *chaosSoak
	}
	switch v := os.Getenv("PGXHA_SOAK"); v {
	case "", "0":
		return 0
	case "1":
		return 10 * time.Minute
	default:
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "PGXHA_SOAK: a duration (10m) or 1")
		return d
	}
}

func TestFaultSchedule(t *testing.T) {
	seed := scheduleSeed(t)
	soak := soakDuration(t)
	t.Logf("fault schedule seed %d (reproduce: go test -race -run TestFaultSchedule ./failover/ -chaos.seed=%d)", seed, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fault schedule seed %d failed (reproduce: go test -race -run TestFaultSchedule ./failover/ -chaos.seed=%d)", seed, seed)
		}
	})
	budget := 4 * time.Minute
	if soak > 0 {
		budget = soak + 5*time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()

	opts := testcluster.Options{}
	if os.Getenv("PGXHA_TESTCLUSTER") == string(testcluster.BackendPatroni) {
		opts.Backend = testcluster.BackendLocal // the schedule promotes nodes itself
	}
	c := testcluster.New(t, opts)
	begin := time.Now() // the manager's log lines count from here too
	// The decision trace: replayed into the decision core at the end, the
	// events this Manager received must give the decisions it made.
	trace, err := os.Create(filepath.Join(t.TempDir(), "decisions.jsonl"))
	require.NoError(t, err)
	defer trace.Close()
	m, err := hasql.New(ctx, c.DSN()+"&pool_max_conns="+strconv.Itoa(schedPoolConns), hasql.WithLogger(testLogger(t)),
		hasql.WithDecisionTrace(trace))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	_, err = m.Master().Exec(ctx, `CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
		CREATE TABLE transfers (id bigint PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount int NOT NULL,
			node text NOT NULL, port int NOT NULL, tli int NOT NULL);
		CREATE TABLE filler (x text);
		INSERT INTO accounts SELECT g, `+strconv.Itoa(schedBalance)+` FROM generate_series(1, `+strconv.Itoa(schedAccounts)+`) g`)
	require.NoError(t, err)
	waitReplayed(t, ctx, c)

	s := &schedule{t: t, ctx: ctx, c: c, m: m, rng: rand.New(rand.NewPCG(seed, 0x5eed)), seed: seed, begin: begin}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range schedWorkers {
		rng := rand.New(rand.NewPCG(seed, uint64(w+1)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.worker(loadCtx, rng)
		}()
	}
	for range schedReaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.reader(loadCtx)
		}()
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopLoad()
			wg.Wait()
		}
	}
	defer stop()

	require.NoError(t, s.waitAcked(50), "transfers on a healthy cluster")
	kinds := s.draw(soak)
	for i := 0; ; i++ {
		var kind faultKind
		if soak == 0 {
			if i == len(kinds) {
				break
			}
			kind = kinds[i]
		} else {
			if time.Since(s.begin) > soak {
				break
			}
			kind = faultKind(s.rng.IntN(int(nFaultKinds)))
		}
		if ctx.Err() != nil {
			break
		}
		s.run(kind)
	}
	stop()
	require.NoError(t, c.Converge(ctx), "the cluster converges at the end")
	s.check()

	m.Close()
	_, err = trace.Seek(0, io.SeekStart)
	require.NoError(t, err)
	n, err := hasql.ReplayDecisionTrace(trace)
	require.NoError(t, err, "the decision trace of the schedule, replayed into the decision core")
	t.Logf("decision trace: %d events replayed, the same decisions", n)
}

// draw picks the short schedule's faults: distinct kinds, in a random
// order, so that a handful of faults covers many of them across runs.
func (s *schedule) draw(soak time.Duration) []faultKind {
	if soak > 0 {
		return nil
	}
	if *chaosFaults != "" {
		var kinds []faultKind
		for _, name := range strings.Split(*chaosFaults, ",") {
			i := slices.Index(faultFlags[:], strings.TrimSpace(name))
			require.GreaterOrEqual(s.t, i, 0, "-chaos.faults: %q is not one of %s", name, strings.Join(faultFlags[:], ", "))
			kinds = append(kinds, faultKind(i))
		}
		return kinds
	}
	kinds := make([]faultKind, nFaultKinds)
	for i := range kinds {
		kinds[i] = faultKind(i)
	}
	s.rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	return kinds[:schedShortFaults]
}

func (s *schedule) worker(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		src := 1 + rng.IntN(schedAccounts)
		dst := 1 + rng.IntN(schedAccounts-1)
		if dst >= src {
			dst++
		}
		tr := &transfer{id: s.nextID.Add(1), src: src, dst: dst, amt: 1 + rng.IntN(10)}
		s.transfer(tr)
		if tr.err == nil && rng.IntN(4) == 0 {
			s.readYourWrite(tr)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// transfer moves tr.amt from tr.src to tr.dst and records where it ran.
func (s *schedule) transfer(tr *transfer) {
	ctx, cancel := context.WithTimeout(s.ctx, schedTransferWait)
	defer cancel()
	first, second, d1, d2 := tr.src, tr.dst, -tr.amt, tr.amt
	if first > second { // one order: no deadlocks
		first, second, d1, d2 = second, first, d2, d1
	}
	tr.start = time.Now()
	var node string
	var port, tli int
	// An attempt's acquire begins after the transfer began, and a retry's
	// after RunInTx decided to retry.
	acquireAfter := tr.start
	retry := func(int, error, failover.Class, time.Duration) { acquireAfter = time.Now() }
	tr.err = failover.RunInTx(ctx, s.m, failover.Options{OnRetry: retry}, func(ctx context.Context, tx pgx.Tx) error {
		tr.runs++
		node, tli = "", 0
		if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance + $2 WHERE id = $1", first, d1); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance + $2 WHERE id = $1", second, d2); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `INSERT INTO transfers (id, src, dst, amount, node, port, tli)
			VALUES ($1, $2, $3, $4, current_setting('cluster_name'), inet_server_port(),
				('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int)
			RETURNING node, port, tli`, tr.id, tr.src, tr.dst, tr.amt).Scan(&node, &port, &tli)
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.attempts = append(s.attempts, attempt{id: tr.id, start: acquireAfter, node: node, port: port, tli: tli, insertAt: time.Now()})
		s.mu.Unlock()
		return nil
	})
	tr.end = time.Now()
	if tr.err == nil {
		tr.node, tr.tli = node, tli
	}
	s.mu.Lock()
	s.transfers = append(s.transfers, tr)
	s.mu.Unlock()
}

// readYourWrite reads an acknowledged transfer back from a replica that has
// replayed it (or the master).
func (s *schedule) readYourWrite(tr *transfer) {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	lsn, err := s.m.CurrentLSN(ctx)
	if err != nil {
		return // no master now: nothing to wait for
	}
	var seen, inRecovery bool
	var node string
	err = s.m.Replica(hasql.MinLSN(lsn), hasql.FallbackToMaster(), hasql.MinLSNWait(500*time.Millisecond)).QueryRow(ctx,
		"SELECT EXISTS (SELECT FROM transfers WHERE id = $1), current_setting('cluster_name'), pg_is_in_recovery()", tr.id).
		Scan(&seen, &node, &inRecovery)
	if err == nil && !seen {
		s.mu.Lock()
		s.ryw = append(s.ryw, fmt.Sprintf("%s: transfer %d, acknowledged at %s on %s (timeline %d), not seen at %s by %s (in recovery %t) past MinLSN %s",
			s.roundAt(tr.end), tr.id, s.since(tr.end), tr.node, tr.tli, s.since(time.Now()), node, inRecovery, lsn))
		s.mu.Unlock()
	}
}

func (s *schedule) reader(ctx context.Context) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r := read{start: time.Now()}
		r.err = s.m.Replica().QueryRow(rctx, "SELECT sum(balance)::int8, count(*), current_setting('cluster_name') FROM accounts").
			Scan(&r.sum, &r.n, &r.node)
		cancel()
		r.end = time.Now()
		if ctx.Err() != nil && r.err != nil {
			return
		}
		s.mu.Lock()
		s.reads = append(s.reads, r)
		for i := range s.windows {
			// The Manager's view the first time a read breaks a window.
			if w := &s.windows[i]; w.view == "" && r.err == nil && w.node == r.node && r.start.After(w.from.Add(detachGrace)) &&
				(w.until.IsZero() || r.end.Before(w.until)) {
				w.view = describeNodes(s.m.Nodes())
			}
		}
		s.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
}

// liveWait bounds the waits for the cluster to serve again: far longer
// than any failover here takes, so that running out of it means the client
// did not recover.
const liveWait = time.Minute

// waitAcked waits until n more transfers are acknowledged, up to liveWait.
func (s *schedule) waitAcked(n int) error {
	target := s.acked() + n
	deadline := time.After(liveWait)
	for s.acked() < target {
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-deadline:
			return fmt.Errorf("%d transfers acknowledged in %s, want %d", n-(target-s.acked()), liveWait, n)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// stuck records that the client did not recover in time; the schedule goes
// on.
func (s *schedule) stuck(r *round, what string, err error) {
	msg := fmt.Sprintf("%s: %s: %v", s.roundAt(time.Now()), what, err)
	s.mu.Lock()
	s.stalls = append(s.stalls, msg)
	s.mu.Unlock()
	if r != nil {
		s.step(r, "STUCK: %s: %v", what, err)
	}
}

// waitAckedOn waits until n transfers begun after since are acknowledged
// on node.
func (s *schedule) waitAckedOn(node string, since time.Time, n int) error {
	deadline := time.After(liveWait)
	for {
		s.mu.Lock()
		count := 0
		for _, tr := range s.transfers {
			if tr.err == nil && tr.node == node && tr.start.After(since) {
				count++
			}
		}
		s.mu.Unlock()
		if count >= n {
			return nil
		}
		select {
		case <-s.ctx.Done():
			return fmt.Errorf("%d transfers acknowledged on %s, want %d: %w", count, node, n, s.ctx.Err())
		case <-deadline:
			return fmt.Errorf("%d transfers acknowledged on %s in %s, want %d", count, node, liveWait, n)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// roundAt names the round in progress at t.
func (s *schedule) roundAt(t time.Time) string {
	for i := len(s.rounds) - 1; i >= 0; i-- {
		if !t.Before(s.rounds[i].begin) {
			return fmt.Sprintf("round %d (%s)", i+1, s.rounds[i].kind)
		}
	}
	return "before the first fault"
}

func (s *schedule) acked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, tr := range s.transfers {
		if tr.err == nil {
			n++
		}
	}
	return n
}

func (s *schedule) hold(r *round, lo, hi time.Duration) {
	d := lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))
	s.step(r, "hold %s", d.Round(time.Millisecond))
	select {
	case <-s.ctx.Done():
	case <-time.After(d):
	}
}

// run runs one fault round on a converged cluster, then converges it.
func (s *schedule) run(kind faultKind) {
	t, ctx, c := s.t, s.ctx, s.c
	t.Helper()
	readyCtx, cancelReady := context.WithTimeout(ctx, liveWait)
	if err := s.m.WaitReady(readyCtx, 1, 2); err != nil {
		s.stuck(nil, "the manager sees the converged cluster", err)
	}
	cancelReady()
	master := c.Master()
	syncR := c.SyncReplicas()[0]
	var async *testcluster.Node
	for _, n := range c.Nodes() {
		if n != master && n != syncR {
			async = n
		}
	}
	r := &round{kind: kind, begin: time.Now()}
	s.mu.Lock()
	s.rounds = append(s.rounds, r)
	s.mu.Unlock()
	t.Logf("schedule: round %d at %s: %s (master %s, sync %s, async %s)", len(s.rounds), s.since(r.begin), kind, master, syncR, async)
	do := func(what string, f func() error) {
		t.Helper()
		s.step(r, "%s", what)
		require.NoError(t, f(), "%s", what)
	}
	failover := func(to *testcluster.Node) {
		t.Helper()
		do("failover to "+to.Name(), func() error { return c.Failover(ctx, to) })
	}
	leave := func(n *testcluster.Node, why string) {
		s.mu.Lock()
		s.windows = append(s.windows, detached{node: n.Name(), from: time.Now(), why: why})
		s.mu.Unlock()
	}
	switch kind {
	case fCrash:
		do("kill "+master.Name(), master.Kill)
		failover(syncR)
		s.hold(r, 500*time.Millisecond, 2*time.Second)
	case fStop:
		do("stop "+master.Name(), master.Stop)
		failover(syncR)
		s.hold(r, 500*time.Millisecond, 2*time.Second)
	case fHang:
		do("pause "+master.Name(), master.Pause)
		failover(syncR)
		s.hold(r, 500*time.Millisecond, 2*time.Second)
		do("resume "+master.Name()+" (a stale master on the old timeline)", master.Resume)
		s.hold(r, time.Second, 2*time.Second)
		do("rejoin "+master.Name(), func() error { return c.Rejoin(ctx, master) })
	case fPartition:
		do("partition "+master.Name(), master.Partition)
		failover(syncR)
		s.hold(r, 500*time.Millisecond, 2*time.Second)
		do("heal "+master.Name()+" (a stale master on the old timeline)", master.Heal)
		s.hold(r, time.Second, 2*time.Second)
		do("rejoin "+master.Name(), func() error { return c.Rejoin(ctx, master) })
	case fRogue:
		do("promote "+syncR.Name()+" while "+master.Name()+" runs", func() error { return syncR.Promote(ctx) })
		leave(async, "follows "+master.Name()+", a stale master, after "+syncR.Name()+"'s promotion")
		s.hold(r, detachGrace+time.Second, detachGrace+3*time.Second)
	case fRogueThenKill:
		do("promote "+syncR.Name()+" while "+master.Name()+" runs", func() error { return syncR.Promote(ctx) })
		leave(async, "follows "+master.Name()+", a stale master, after "+syncR.Name()+"'s promotion")
		s.step(r, "wait for writes acknowledged on %s", syncR.Name())
		if err := s.waitAckedOn(syncR.Name(), time.Now(), 5); err != nil {
			s.stuck(r, "writes go to the promoted "+syncR.Name(), err)
		}
		do("kill "+syncR.Name()+" (only the stale "+master.Name()+" is writable)", syncR.Kill)
		s.hold(r, time.Second, 2*time.Second)
		do("start "+syncR.Name(), syncR.Start)
		s.hold(r, detachGrace, detachGrace+time.Second)
	case fDouble:
		do("kill "+master.Name(), master.Kill)
		failover(syncR)
		// async is syncR's synchronous replica now; what syncR
		// acknowledged before that must have reached it.
		do("wait until "+async.Name()+" received "+syncR.Name()+"'s WAL", func() error { return waitReceived(ctx, syncR, async) })
		do("kill "+syncR.Name()+" right after", syncR.Kill)
		failover(async)
		s.hold(r, 500*time.Millisecond, 2*time.Second)
	case fReplicaCrash:
		n := []*testcluster.Node{syncR, async}[s.rng.IntN(2)]
		do("kill replica "+n.Name(), n.Kill)
		s.hold(r, 500*time.Millisecond, 2*time.Second)
		do("start "+n.Name(), n.Start)
		s.hold(r, 500*time.Millisecond, time.Second)
	case fReplicaPartition:
		n := []*testcluster.Node{syncR, async}[s.rng.IntN(2)]
		do("partition replica "+n.Name(), n.Partition)
		s.hold(r, 500*time.Millisecond, 2*time.Second)
		do("heal "+n.Name(), n.Heal)
		s.hold(r, 500*time.Millisecond, time.Second)
	case fOrphan:
		do("kill "+master.Name(), master.Kill)
		do("promote "+syncR.Name()+" only", func() error { return syncR.Promote(ctx) })
		leave(async, "orphaned: follows the dead "+master.Name())
		s.hold(r, detachGrace+time.Second, detachGrace+3*time.Second)
	case fOrphanAhead:
		// While the sync replica hangs, commits wait for it and their WAL
		// reaches the async replica only: it ends up ahead of the sync
		// one, on the old timeline.
		do("pause "+syncR.Name(), syncR.Pause)
		s.hold(r, 200*time.Millisecond, 500*time.Millisecond)
		do("write WAL on "+master.Name()+" that only "+async.Name()+" receives", func() error {
			return writeAhead(ctx, master, async)
		})
		do("kill "+master.Name(), master.Kill)
		do("resume "+syncR.Name(), syncR.Resume)
		do("promote "+syncR.Name()+" only", func() error { return syncR.Promote(ctx) })
		leave(async, "orphaned, with WAL past "+syncR.Name()+"'s fork: follows the dead "+master.Name())
		s.hold(r, detachGrace+time.Second, detachGrace+3*time.Second)
	}
	s.mu.Lock()
	for i := range s.windows {
		if s.windows[i].until.IsZero() {
			s.windows[i].until = time.Now()
		}
	}
	s.mu.Unlock()
	do("converge", func() error { return c.Converge(ctx) })
	if err := s.waitAcked(20); err != nil {
		s.stuck(r, "writes resume after convergence", err)
	}
	r.end = time.Now()
}

// writeAhead commits on master, without waiting for a synchronous
// replica, a few hundred kilobytes of WAL outside the bank, and waits until
// replica received it.
func writeAhead(ctx context.Context, master, replica *testcluster.Node) error {
	mc, err := master.Conn(ctx)
	if err != nil {
		return err
	}
	defer mc.Close(context.Background())
	if _, err := mc.Exec(ctx, "SET synchronous_commit = local"); err != nil {
		return err
	}
	if _, err := mc.Exec(ctx, "INSERT INTO filler SELECT md5(g::text) FROM generate_series(1, 5000) g"); err != nil {
		return err
	}
	return waitReceived(ctx, master, replica)
}

// waitReceived waits until replica has received master's current WAL.
func waitReceived(ctx context.Context, master, replica *testcluster.Node) error {
	mc, err := master.Conn(ctx)
	if err != nil {
		return err
	}
	defer mc.Close(context.Background())
	var lsn string
	if err := mc.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		return err
	}
	rc, err := replica.Conn(ctx)
	if err != nil {
		return err
	}
	defer rc.Close(context.Background())
	for {
		var done bool
		if err := rc.QueryRow(ctx, "SELECT coalesce(pg_last_wal_receive_lsn() >= $1::pg_lsn, false)", lsn).Scan(&done); err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitReplayed waits until every replica replayed the master's position.
func waitReplayed(t *testing.T, ctx context.Context, c *testcluster.Cluster) {
	t.Helper()
	mc, err := c.Master().Conn(ctx)
	require.NoError(t, err)
	defer mc.Close(context.Background())
	var lsn string
	require.NoError(t, mc.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn))
	for _, n := range c.Replicas() {
		conn, err := n.Conn(ctx)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			var done bool
			err := conn.QueryRow(ctx, "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)", lsn).Scan(&done)
			return err == nil && done
		}, time.Minute, 5*time.Millisecond, "%s replays %s", n, lsn)
		conn.Close(context.Background())
	}
}

// check asserts the invariants on the converged cluster and reports the
// figures.
func (s *schedule) check() {
	t, ctx := s.t, s.ctx
	waitReplayed(t, ctx, s.c)
	master := s.c.Master()
	conn, err := master.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(context.Background())

	type row struct {
		src, dst, amt int
		node          string
		tli           int
	}
	present := map[int64]row{}
	rows, err := conn.Query(ctx, "SELECT id, src, dst, amount, node, tli FROM transfers")
	require.NoError(t, err)
	for rows.Next() {
		var id int64
		var r row
		require.NoError(t, rows.Scan(&id, &r.src, &r.dst, &r.amt, &r.node, &r.tli))
		present[id] = r
	}
	require.NoError(t, rows.Err())
	balances := map[int]int64{}
	rows, err = conn.Query(ctx, "SELECT id, balance FROM accounts")
	require.NoError(t, err)
	var sum int64
	for rows.Next() {
		var id int
		var b int64
		require.NoError(t, rows.Scan(&id, &b))
		balances[id] = b
		sum += b
	}
	require.NoError(t, rows.Err())
	for _, n := range s.c.Replicas() {
		rc, err := n.Conn(ctx)
		require.NoError(t, err)
		var count, replicaSum int64
		require.NoError(t, rc.QueryRow(ctx, "SELECT (SELECT count(*) FROM transfers), (SELECT sum(balance)::int8 FROM accounts)").Scan(&count, &replicaSum))
		rc.Close(context.Background())
		if count != int64(len(present)) || replicaSum != sum {
			t.Errorf("replica %s after convergence: %d transfers, sum %d; master %s: %d, %d", n, count, replicaSum, master, len(present), sum)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var violations []string
	report := func(what string, items []string) {
		if len(items) == 0 {
			return
		}
		violations = append(violations, what)
		shown := items
		if len(shown) > 10 {
			shown = shown[:10]
		}
		t.Errorf("%s: %d times:\n  %s", what, len(items), strings.Join(shown, "\n  "))
	}

	// The money.
	const total = schedAccounts * schedBalance
	if sum != total {
		report("the sum of all accounts changed", []string{fmt.Sprintf("%d, want %d", sum, total)})
	}
	want := map[int]int64{}
	for id := 1; id <= schedAccounts; id++ {
		want[id] = schedBalance
	}
	for _, r := range present {
		want[r.src] -= int64(r.amt)
		want[r.dst] += int64(r.amt)
	}
	var torn []string
	for id := 1; id <= schedAccounts; id++ {
		if balances[id] != want[id] {
			torn = append(torn, fmt.Sprintf("account %d: %d, its transfers say %d", id, balances[id], want[id]))
		}
	}
	report("accounts disagree with the transfers present (a transfer applied in part)", torn)

	// Every transfer's outcome against what is there.
	var lost, failedPresent, twice []string
	var acked, unknown, failed, unknownPresent int
	classes := map[string]int{}
	var examples []string
	for _, tr := range s.transfers {
		_, there := present[tr.id]
		var pgErr *pgconn.PgError
		switch {
		case tr.err == nil:
			acked++
			if !there {
				lost = append(lost, fmt.Sprintf("%s: transfer %d acknowledged at %s, written on %s (timeline %d)", s.roundAt(tr.end), tr.id, s.since(tr.end), tr.node, tr.tli))
			}
		case errors.Is(tr.err, failover.ErrCommitUnknown):
			unknown++
			if there {
				unknownPresent++
			}
		default:
			failed++
			if errors.As(tr.err, &pgErr) && pgErr.Code == "23505" {
				twice = append(twice, fmt.Sprintf("%s: transfer %d (%d runs, %s to %s): %v", s.roundAt(tr.end), tr.id, tr.runs, s.since(tr.start), s.since(tr.end), tr.err))
			} else if there {
				failedPresent = append(failedPresent, fmt.Sprintf("%s: transfer %d (%s to %s, %d runs): %v", s.roundAt(tr.end), tr.id, s.since(tr.start), s.since(tr.end), tr.runs, tr.err))
			}
		}
		if tr.err != nil {
			c := errClass(tr.err)
			if classes[c] == 0 {
				example := tr.err.Error()
				if len(example) > 300 {
					example = example[:300] + "..."
				}
				examples = append(examples, c+": "+example)
			}
			classes[c]++
		}
	}
	report("acknowledged transfers missing", lost)
	report("transfers whose RunInTx failed for sure are present", failedPresent)
	report("transfers that ran twice (their unique id was already there)", twice)

	// Replica reads.
	var tornReads, detachedReads []string
	readErrors := 0
	nodeReads := map[string]int{}
	inWindow := make([][]read, len(s.windows))
	for _, r := range s.reads {
		if r.err != nil {
			readErrors++
			continue
		}
		nodeReads[r.node]++
		if r.sum != total || r.n != schedAccounts {
			tornReads = append(tornReads, fmt.Sprintf("at %s on %s: sum %d over %d accounts", s.since(r.start), r.node, r.sum, r.n))
		}
		for i, w := range s.windows {
			// Begun after the grace, answered before the node was rebuilt:
			// a read that waited for a replica until the rebuild was
			// answered by the rebuilt node.
			if r.node == w.node && r.start.After(w.from.Add(detachGrace)) && r.end.Before(w.until) {
				inWindow[i] = append(inWindow[i], r)
				if len(inWindow[i]) <= 3 {
					t.Logf("read from detached %s: began %s, answered %s", r.node, s.since(r.start), s.since(r.end))
				}
			}
		}
	}
	for i, w := range s.windows {
		if rs := inWindow[i]; len(rs) > 0 {
			detachedReads = append(detachedReads, fmt.Sprintf("%s: %d reads served by %s from %s to %s, which %s since %s (until %s)",
				s.roundAt(w.from), len(rs), w.node, s.since(rs[0].start), s.since(rs[len(rs)-1].start), w.why, s.since(w.from), s.since(w.until))+
				"; the Manager's nodes then:"+w.view)
		}
	}
	report("torn replica reads (a snapshot whose balances do not add up)", tornReads)
	report("reads served by a replica that left the cluster (beyond "+detachGrace.String()+" after it did)", detachedReads)
	report("read-your-writes: an acknowledged transfer not seen past its MinLSN", s.ryw)
	report("the client did not recover (writes or the manager's view stayed stuck)", s.stalls)

	// Where writes landed. An attempt that started after a write on a
	// higher timeline was acknowledged must not run on a lower one, and
	// a timeline is one node's.
	ackedAt := make([]*transfer, 0, acked)
	for _, tr := range s.transfers {
		if tr.err == nil {
			ackedAt = append(ackedAt, tr)
		}
	}
	sort.Slice(ackedAt, func(i, j int) bool { return ackedAt[i].end.Before(ackedAt[j].end) })
	byStart := slices.Clone(s.attempts)
	sort.Slice(byStart, func(i, j int) bool { return byStart[i].start.Before(byStart[j].start) })
	var older []string
	maxTli, maxBy, k := 0, (*transfer)(nil), 0
	for _, a := range byStart {
		for ; k < len(ackedAt) && ackedAt[k].end.Before(a.start); k++ {
			if ackedAt[k].tli > maxTli {
				maxTli, maxBy = ackedAt[k].tli, ackedAt[k]
			}
		}
		if a.tli < maxTli {
			_, there := present[a.id]
			older = append(older, fmt.Sprintf("%s: transfer %d, its attempt begun after %s, ran on %s (timeline %d) at %s (present at the end: %t); transfer %d had been acknowledged on %s (timeline %d) at %s",
				s.roundAt(a.insertAt), a.id, s.since(a.start), a.node, a.tli, s.since(a.insertAt), there, maxBy.id, maxBy.node, maxBy.tli, s.since(maxBy.end)))
		}
	}
	report("writes sent to a node on an older timeline after a newer one was acknowledged (a stale master)", older)
	nodesOf := map[int]map[string]bool{}
	for _, a := range s.attempts {
		if nodesOf[a.tli] == nil {
			nodesOf[a.tli] = map[string]bool{}
		}
		nodesOf[a.tli][a.node] = true
	}
	for _, r := range present {
		if nodesOf[r.tli] == nil {
			nodesOf[r.tli] = map[string]bool{}
		}
		nodesOf[r.tli][r.node] = true
	}
	var shared []string
	for tli, nodes := range nodesOf {
		if len(nodes) > 1 {
			shared = append(shared, fmt.Sprintf("timeline %d written on %s", tli, strings.Join(slices.Sorted(mapsKeys(nodes)), " and ")))
		}
	}
	report("a timeline written on more than one node", shared)

	// Figures.
	var outages []string
	gaps := map[faultKind][]time.Duration{}
	for i, r := range s.rounds {
		end := r.end
		if end.IsZero() {
			end = time.Now()
		}
		gap := longestGap(ackedAt, r.begin, end)
		gaps[r.kind] = append(gaps[r.kind], gap)
		outages = append(outages, fmt.Sprintf("round %d, %s: longest time without an acknowledged transfer %s\n    %s",
			i+1, r.kind, gap.Round(time.Millisecond), strings.Join(r.steps, "\n    ")))
	}
	var byKind []string
	for k := range nFaultKinds {
		if g := gaps[k]; len(g) > 0 {
			slices.Sort(g)
			byKind = append(byKind, fmt.Sprintf("%-75s %3d  median %6s  max %6s", k.String(), len(g),
				g[len(g)/2].Round(time.Millisecond), g[len(g)-1].Round(time.Millisecond)))
		}
	}
	t.Logf("longest time without an acknowledged transfer per round, by fault (count, median, max):\n  %s", strings.Join(byKind, "\n  "))
	t.Logf("fault schedule seed %d: %d faults in %s; %d transfers: %d acknowledged, %d commit outcome unknown (%d of them committed), %d failed; errors by class %v; %d replica reads (%d errors) by node %v\n  %s",
		s.seed, len(s.rounds), time.Since(s.begin).Round(time.Second), len(s.transfers), acked, unknown, unknownPresent, failed,
		classes, len(s.reads), readErrors, nodeReads, strings.Join(outages, "\n  "))
	if len(examples) > 0 {
		t.Logf("an error of each class:\n  %s", strings.Join(examples, "\n  "))
	}
	if len(violations) > 0 {
		t.Errorf("violated: %s", strings.Join(violations, "; "))
	}
}

func mapsKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// longestGap is the longest time in [from, to] without an acknowledgement.
func longestGap(acked []*transfer, from, to time.Time) time.Duration {
	last, gap := from, time.Duration(0)
	for _, tr := range acked {
		if tr.end.Before(from) || tr.end.After(to) {
			continue
		}
		gap = max(gap, tr.end.Sub(last))
		last = tr.end
	}
	return max(gap, to.Sub(last))
}

// describeNodes is the Manager's view of the nodes, one line each.
func describeNodes(nodes []hasql.NodeStatus) string {
	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "\n      %s %s: %s, up %t, timeline %d, LSN %s", n.Addr, n.Name, n.Role, n.Up, n.Timeline, n.LSN)
		if n.Detached != "" {
			fmt.Fprintf(&b, ", detached: %s", n.Detached)
		}
		if n.LastError != nil {
			fmt.Fprintf(&b, ", last error: %v", n.LastError)
		}
	}
	return b.String()
}

// errClass names an error for the figures.
func errClass(err error) string {
	var fe *failover.Error
	if errors.As(err, &fe) {
		return fe.Class.String()
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return "SQLSTATE " + pgErr.Code
	}
	return "other"
}
