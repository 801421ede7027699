// Command failover-bench measures failovers as the application sees them.
//
// For each scenario (master crash, clean stop, hang, partition; each followed
// by the promotion of the synchronous replica), it starts a fresh local
// cluster, runs writers through pgxha, makes the fault and measures; then
// the same with a plain pgxpool built from the same multi-host DSN with
// target_session_attrs=read-write, in a cluster of its own. The two clients
// alternate which goes first, so both see the same machine over the run; each
// runs alone, so that neither one's reconnection attempts load the machine
// while the other is measured (-together runs both against one cluster and
// one fault). It repeats each scenario -n times and prints, per scenario and
// client, p50/p99/max of:
//
//	promote→write  time from the promotion completing (pg_promote returned)
//	               to the first acknowledged write (0 when a write was
//	               acknowledged before pg_promote returned)
//	outage         the longest time without any acknowledged write, from the
//	               fault on: the write outage as the application saw it
//	errors         write errors the application saw
//	lost           acknowledged writes missing on the new master
//
//	notice         (pgxha) time from the fault to the Manager's view no
//	               longer routing writes to the old master
//
// The fault comes at a random moment within -spread (one check interval by
// default) after the writes began, so that a hang, noticed by the next
// check, is measured over the interval rather than at one point of it.
//
//	go run ./examples/failover-bench -n 20
//	go run ./examples/failover-bench -n 5 -settings hasql_profile=fleet -baseline=false
//	PGXHA_TESTCLUSTER=compose go run ./examples/failover-bench -scenarios partition,deadhost
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/internal/chaos"
	"github.com/pgxha/pgxha/testcluster"
)

var (
	verbose  bool
	settings string // extra DSN settings for pgxha
	baseline bool   // measure pgxpool too
	spread   time.Duration
)

type scenario struct {
	name  string
	fault func(*testcluster.Node) error
}

var scenarios = []scenario{
	{"crash", (*testcluster.Node).Kill},
	{"stop", (*testcluster.Node).Stop},
	{"hang", (*testcluster.Node).Pause},
	{"partition", (*testcluster.Node).Partition},
	// A dead host: partitioned first, so that the closes of its dying
	// processes never leave it, then killed (with the compose backend its
	// network namespace goes with its container). Not in the default set:
	// with the local backend's fault proxy it is a partition.
	{"deadhost", func(n *testcluster.Node) error {
		if err := n.Partition(); err != nil {
			return err
		}
		return n.Kill()
	}},
}

func main() {
	n := flag.Int("n", 20, "runs per scenario")
	writers := flag.Int("writers", 4, "writers per client")
	window := flag.Duration("window", 10*time.Second, "how long after the fault a client may take to recover")
	only := flag.String("scenarios", "", "comma-separated scenarios to run (default all: crash,stop,hang,partition)")
	flag.BoolVar(&verbose, "v", false, "print a client's write errors when there are more than writers")
	together := flag.Bool("together", false, "run both clients against one cluster and one fault, instead of each alone in alternating runs")
	flag.StringVar(&settings, "settings", "", "extra DSN settings for pgxha, e.g. `hasql_profile=fleet`")
	flag.BoolVar(&baseline, "baseline", true, "measure plain pgxpool too")
	flag.DurationVar(&spread, "spread", hasql.DefaultCheckInterval,
		"make the fault at a random moment within this long after the writes began (0: at once): a hang is noticed by the next check, so a fixed moment measures one point of the check interval")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *n, *writers, *window, *only, *together); err != nil {
		fmt.Fprintln(os.Stderr, "failover-bench:", err)
		os.Exit(1)
	}
}

// sample is one client's figures for one run.
type sample struct {
	notice         time.Duration // pgxha: fault to the view routing writes elsewhere
	promoteToWrite time.Duration
	outage         time.Duration
	recovered      bool
	errors         int
	lost           int
}

type pgxhaClient struct{ m *hasql.Manager }

func (c pgxhaClient) Write(ctx context.Context, w, seq int) error {
	_, err := c.m.Master().Exec(ctx, chaos.InsertSQL, "pgxha", w, seq)
	return err
}
func (c pgxhaClient) Read(context.Context, int) error { return nil }

type poolClient struct{ p *pgxpool.Pool }

func (c poolClient) Write(ctx context.Context, w, seq int) error {
	_, err := c.p.Exec(ctx, chaos.InsertSQL, "pgxpool", w, seq)
	return err
}
func (c poolClient) Read(context.Context, int) error { return nil }

func run(ctx context.Context, n, writers int, window time.Duration, only string, together bool) error {
	fmt.Printf("failover-bench: %d runs per scenario, %d writers per client, %s, %d CPUs, %s\n",
		n, writers, runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), time.Now().UTC().Format("2006-01-02"))
	mode := "each client alone, alternating"
	if together {
		mode = "both clients against one cluster and one fault"
	}
	fmt.Printf("pgxha defaults: check interval %s, check timeout %s, fast checks %s; baseline: pgxpool, target_session_attrs=read-write; %s\n",
		hasql.DefaultCheckInterval, hasql.DefaultCheckTimeout, hasql.DefaultFastCheckInterval, mode)
	backend := os.Getenv("PGXHA_TESTCLUSTER")
	if backend == "" {
		backend = "local"
	}
	fmt.Printf("pgxha settings: %q; baseline measured: %v; testcluster backend: %s; fault within %s of the writes' start, at random\n\n",
		settings, baseline, backend, spread)
	for _, sc := range scenarios {
		if only == "" && sc.name == "deadhost" || only != "" && !strings.Contains(","+only+",", ","+sc.name+",") {
			continue
		}
		var ours, base []sample
		for i := 0; i < n; i++ {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Alone, each client in a cluster of its own, in alternating
			// order; together, both in one cluster and one fault.
			var rounds [][]string
			switch {
			case !baseline:
				rounds = [][]string{{clientPgxha}}
			case together:
				rounds = [][]string{{clientPgxha, clientPgxpool}}
			case i%2 == 0:
				rounds = [][]string{{clientPgxha}, {clientPgxpool}}
			default:
				rounds = [][]string{{clientPgxpool}, {clientPgxha}}
			}
			got := map[string]sample{}
			for _, clients := range rounds {
				samples, err := runOnce(ctx, sc, writers, window, clients)
				if err != nil {
					return fmt.Errorf("%s run %d: %w", sc.name, i+1, err)
				}
				for k, v := range samples {
					got[k] = v
				}
			}
			o, b := got[clientPgxha], got[clientPgxpool]
			ours = append(ours, o)
			if baseline {
				base = append(base, b)
			}
			fmt.Fprintf(os.Stderr, "  %s %d/%d: pgxha notice %s promote→write %s outage %s errors %d | pgxpool %s, %s, %d\n", sc.name, i+1, n,
				show(o.notice, o.notice >= 0), show(o.promoteToWrite, o.recovered), show(o.outage, o.recovered), o.errors,
				show(b.promoteToWrite, b.recovered), show(b.outage, b.recovered), b.errors)
		}
		report(sc.name, ours, base, window)
	}
	return nil
}

// Clients, by name.
const (
	clientPgxha   = "pgxha"
	clientPgxpool = "pgxpool"
)

// runOnce starts a fresh cluster, puts each of clients under load, makes the
// fault, promotes the sync replica and measures each client.
func runOnce(ctx context.Context, sc scenario, writers int, window time.Duration, clients []string) (map[string]sample, error) {
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c, err := testcluster.Start(startCtx, testcluster.Options{})
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	n1, n2 := c.Nodes()[0], c.Nodes()[1]

	admin, err := n1.Conn(startCtx)
	if err != nil {
		return nil, err
	}
	err = chaos.CreateTable(startCtx, admin)
	admin.Close(context.Background())
	if err != nil {
		return nil, err
	}
	loads := map[string]*chaos.Load{}
	defer func() {
		for _, l := range loads {
			l.Stop()
		}
	}()
	cfg := chaos.Config{Writers: writers, OpTimeout: 5 * time.Second}
	var watched *hasql.Manager
	n1Addr := n1.Addr()
	network := os.Getenv("PGXHA_TESTCLUSTER") == string(testcluster.BackendCompose)
	for _, name := range clients {
		var client chaos.Client
		switch name {
		case clientPgxha:
			dsn := c.DSN()
			if network {
				// The containers' own addresses: Docker's proxy on a
				// published port would answer TCP keepalives itself.
				var addrs []string
				for _, n := range c.Nodes() {
					a, err := n.NetworkAddr()
					if err != nil {
						return nil, err
					}
					addrs = append(addrs, a)
				}
				dsn = c.DSNFor(addrs...)
				if n1Addr, err = n1.NetworkAddr(); err != nil {
					return nil, err
				}
			}
			if settings != "" {
				dsn += "&" + settings
			}
			m, err := hasql.New(startCtx, dsn, hasql.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
			if err != nil {
				return nil, err
			}
			defer m.Close()
			if err := m.WaitReady(startCtx, 1, 2); err != nil {
				return nil, err
			}
			client = pgxhaClient{m}
			watched = m
		case clientPgxpool:
			pool, err := pgxpool.New(startCtx, c.DSN()+"&target_session_attrs=read-write")
			if err != nil {
				return nil, err
			}
			defer pool.Close()
			client = poolClient{pool}
		}
		loads[name] = chaos.Start(client, cfg)
	}
	for _, l := range loads {
		if err := l.WaitWrites(startCtx, 50); err != nil {
			return nil, err
		}
	}

	// The Manager's view, from the fault on: when it stops routing writes
	// to n1.
	noticed := make(chan time.Time, 1)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if watched != nil {
		go func() {
			for watchCtx.Err() == nil {
				for _, st := range watched.Nodes() {
					if st.Addr == n1Addr && (st.Role != hasql.RoleMaster || !st.Up || st.Suspect) {
						noticed <- time.Now()
						return
					}
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	if spread > 0 {
		select {
		case <-time.After(rand.N(spread)):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	fault := time.Now()
	if err := sc.fault(n1); err != nil {
		return nil, err
	}
	faultDone := time.Now()
	if err := c.Failover(startCtx, n2); err != nil {
		return nil, err
	}
	promoted := n2.PromotedAt()

	// Every client gets the window to recover; the run ends early once all
	// have.
	deadline := fault.Add(window)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		all := true
		for _, l := range loads {
			all = all && recovered(l, faultDone)
		}
		if all {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopWatch()
	var notice time.Duration
	select {
	case t := <-noticed:
		notice = t.Sub(fault)
	default:
		notice = -1 // not within the window
	}
	results := map[string]*chaos.Result{}
	for name, l := range loads {
		results[name] = l.Stop()
	}
	loads = nil

	conn, err := n2.Conn(startCtx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	samples := map[string]sample{}
	for name, r := range results {
		s, err := measure(startCtx, r, name, fault, faultDone, promoted, conn)
		if err != nil {
			return nil, err
		}
		if name == clientPgxha {
			s.notice = notice
		}
		if verbose && s.errors > writers {
			for _, op := range r.WriteErrors() {
				fmt.Fprintf(os.Stderr, "    %s write error at +%s: %v\n", name, op.End.Sub(fault).Round(time.Millisecond), op.Err)
			}
		}
		samples[name] = s
	}
	return samples, nil
}

// recovered: 20 writes acknowledged that started after the fault took effect.
func recovered(l *chaos.Load, faultDone time.Time) bool {
	return l.Snapshot().AckedAfter(faultDone) >= 20
}

func measure(ctx context.Context, r *chaos.Result, client string, fault, faultDone, promoted time.Time, conn *pgx.Conn) (sample, error) {
	s := sample{errors: len(r.WriteErrors())}
	s.outage, s.recovered = r.LongestGap(fault, faultDone)
	s.recovered = s.recovered && r.AckedAfter(faultDone) >= 20
	if first, ok := r.FirstAckAfter(promoted); ok {
		s.promoteToWrite = max(first.Sub(promoted), 0)
	}
	lost, err := r.Lost(ctx, conn, client)
	if err != nil {
		return s, err
	}
	s.lost = len(lost)
	return s, nil
}

func show(d time.Duration, ok bool) string {
	if !ok {
		return "did not recover"
	}
	return d.Round(time.Millisecond).String()
}

func report(name string, ours, base []sample, window time.Duration) {
	fmt.Printf("scenario: master %s, then promotion of the sync replica (%d runs)\n", name, len(ours))
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "metric\tpgxha p50\tp99\tmax\t\tpgxpool p50\tp99\tmax\t")
	row := func(label string, f func(sample) (float64, bool), unit string) {
		o, on := values(ours, f)
		b, bn := values(base, f)
		fmt.Fprintf(w, "%s\t%s\t\t%s\t\n", label, stats(o, on, len(ours), unit, window), stats(b, bn, len(base), unit, window))
	}
	dur := func(get func(sample) time.Duration) func(sample) (float64, bool) {
		return func(s sample) (float64, bool) { return float64(get(s)) / float64(time.Millisecond), s.recovered }
	}
	row("notice (pgxha)", func(s sample) (float64, bool) { return float64(s.notice) / float64(time.Millisecond), s.notice >= 0 }, "ms")
	row("promote→write", dur(func(s sample) time.Duration { return s.promoteToWrite }), "ms")
	row("outage", dur(func(s sample) time.Duration { return s.outage }), "ms")
	row("errors", func(s sample) (float64, bool) { return float64(s.errors), true }, "")
	row("lost writes", func(s sample) (float64, bool) { return float64(s.lost), true }, "")
	w.Flush()
	fmt.Println()
}

// values collects f over samples; missing counts samples that did not
// recover.
func values(samples []sample, f func(sample) (float64, bool)) ([]float64, int) {
	var out []float64
	missing := 0
	for _, s := range samples {
		v, ok := f(s)
		if !ok {
			missing++
			continue
		}
		out = append(out, v)
	}
	sort.Float64s(out)
	return out, missing
}

func stats(v []float64, missing, total int, unit string, window time.Duration) string {
	if total == 0 {
		return "-\t\t"
	}
	if len(v) == 0 {
		return fmt.Sprintf("did not recover in %s (%d/%d)\t\t", window, missing, total)
	}
	pct := func(p float64) string {
		i := int(p*float64(len(v)) + 0.5)
		i = min(max(i-1, 0), len(v)-1)
		return format(v[i], unit)
	}
	s := pct(0.50) + "\t" + pct(0.99) + "\t" + format(v[len(v)-1], unit)
	if missing > 0 {
		s += fmt.Sprintf(" (+%d did not recover)", missing)
	}
	return s
}

func format(v float64, unit string) string {
	if unit == "" {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.0f%s", v, unit)
}
