// Command fleetbench measures what a fleet of service instances costs the
// servers: K Managers side by side (one per instance), each with default
// settings, against one local 3-node cluster (a master, a sync and an async
// replica). For every K it prints the CPU every postgres process of each
// node used over the window (from /proc), what that comes to per Manager and
// per replica once the cluster's own upkeep (measured with no Manager, in
// the same run) is taken off, and the backends on each node.
//
//	go run ./examples/fleetbench
//	go run ./examples/fleetbench -managers 1,8,32 -settings 'hasql_check_interval=1s'
//	go run ./examples/fleetbench -pgbouncer transaction
//	go run ./examples/fleetbench -versus -managers 32
//
// With -versus it compares, in one run, K Managers with K of the cheapest
// role check there is (one connection per node running the prepared
// SELECT pg_is_in_recovery() every check interval, all nodes at once, as
// go-hasql does), in alternating windows, and prints what each costs the
// servers and the ratio, in all and node by node. Both sides are spread over the interval, as the
// instances of a fleet are: each Manager's checks fall due on multiples of
// the interval since it started, and so do each role checker's.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

func main() {
	managers := flag.String("managers", "1,8,32,128", "numbers of Managers to run side by side")
	window := flag.Duration("window", 10*time.Second, "measurement window")
	warmup := flag.Duration("warmup", 15*time.Second, "time after the Managers are ready, before measuring (a Manager checks fast for a few seconds after it starts)")
	settings := flag.String("settings", "", "extra DSN settings for every Manager, e.g. `hasql_check_interval=1s`")
	bouncer := flag.String("pgbouncer", "", "put a PgBouncer in front of every node: `session` or transaction")
	versus := flag.Bool("versus", false, "compare K Managers with K minimal role checks at the same interval, in alternating windows")
	rounds := flag.Int("rounds", 3, "with -versus: the pairs of windows")
	flag.BoolVar(&roleOnly, "role-only", false, "with -versus: the Managers check with SELECT pg_is_in_recovery() alone (what the Manager costs beyond its check)")
	flag.Parse()
	if *versus {
		if err := runVersus(*managers, *settings, *bouncer, *window, *warmup, *rounds); err != nil {
			fmt.Fprintln(os.Stderr, "fleetbench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*managers, *settings, *bouncer, *window, *warmup); err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench:", err)
		os.Exit(1)
	}
}

// bench is what both modes start from: the counts of Managers, a cluster
// with room for the most, the Managers' DSN and check interval, and words
// for the settings.
type bench struct {
	ks       []int
	c        *testcluster.Cluster
	dsn      string
	interval time.Duration
	desc     string
}

// setup parses the flags both modes share and starts the cluster; the
// caller stops b.c.
func setup(counts, settings, bouncer string) (*bench, error) {
	extra, err := url.ParseQuery(settings)
	if err != nil {
		return nil, fmt.Errorf("-settings: %w", err)
	}
	b := &bench{}
	maxK := 0
	for _, s := range strings.Split(counts, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || k < 1 {
			return nil, fmt.Errorf("-managers: bad count %q", s)
		}
		b.ks = append(b.ks, k)
		maxK = max(maxK, k)
	}
	b.c, err = testcluster.Start(context.Background(), testcluster.Options{
		// Every Manager keeps a check connection and an idle pooled one on
		// each node.
		Settings:  map[string]string{"max_connections": strconv.Itoa(max(2*maxK+50, 100))},
		PgBouncer: testcluster.PgBouncerMode(bouncer),
	})
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(b.c.DSN())
	if err != nil {
		b.c.Stop()
		return nil, err
	}
	q := u.Query()
	for k, v := range extra {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	b.dsn = u.String()
	cfg, err := hasql.ParseConfig(b.dsn)
	if err != nil {
		b.c.Stop()
		return nil, err
	}
	b.interval = cfg.CheckInterval
	b.desc = "default settings"
	if settings != "" {
		b.desc = "settings " + settings
	}
	if bouncer != "" {
		b.desc += ", PgBouncer (" + bouncer + " mode) in front of every node"
	}
	return b, nil
}

// startManagers starts k Managers and waits until they are ready. Service
// instances start at unrelated times: the Managers (whose checks fall due
// on multiples of the interval since their start) are spread over it. The
// Managers made are returned with any error, for the caller to close.
func startManagers(ctx context.Context, b *bench, k int, opts ...hasql.Option) ([]*hasql.Manager, error) {
	opts = append([]hasql.Option{hasql.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)
	ms := make([]*hasql.Manager, 0, k)
	begin := time.Now()
	for i := range k {
		time.Sleep(time.Until(begin.Add(time.Duration(i) * b.interval / time.Duration(k))))
		m, err := hasql.New(ctx, b.dsn, opts...)
		if err != nil {
			return ms, err
		}
		ms = append(ms, m)
	}
	replicas := 2
	if roleOnly {
		replicas = 0 // the role alone cannot tell what a replica follows
	}
	readyCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, m := range ms {
		if err := m.WaitReady(readyCtx, 1, replicas); err != nil {
			return ms, fmt.Errorf("%d Managers: %w", k, err)
		}
	}
	return ms, nil
}

func run(counts, settings, bouncer string, window, warmup time.Duration) error {
	b, err := setup(counts, settings, bouncer)
	if err != nil {
		return err
	}
	defer b.c.Stop()
	c, ks, desc := b.c, b.ks, b.desc
	ctx := context.Background()
	fmt.Printf("fleetbench: K Managers with %s, 3-node cluster (master, sync, async), %s window after %s, %s/%s, %d CPUs\n\n",
		desc, window, warmup, runtime.GOOS, runtime.GOARCH, runtime.NumCPU())

	nodes := c.Nodes()
	idle, err := measure(c, window)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "Managers\tservers' CPU\tmaster\tsync\tasync\tper Manager per replica\tper Manager on the master\tbackends per node\t")
	fmt.Fprintf(w, "0\t%s\t%s\t%s\t%s\t\t\t%s\t\n", pct(sum(idle.cpu), window), pct(idle.cpu[0], window),
		pct(idle.cpu[1], window), pct(idle.cpu[2], window), backends(idle.backends))
	for _, k := range ks {
		ms, err := startManagers(ctx, b, k)
		closeAll := func() {
			for _, m := range ms {
				m.Close()
			}
		}
		if err != nil {
			closeAll()
			return err
		}
		time.Sleep(warmup)
		r, err := measure(c, window)
		closeAll()
		if err != nil {
			return err
		}
		var replicas time.Duration
		for i := range nodes[1:] {
			replicas += max(r.cpu[1+i]-idle.cpu[1+i], 0)
		}
		perReplica := time.Duration(float64(replicas) / float64(k*(len(nodes)-1)))
		perMaster := time.Duration(float64(max(r.cpu[0]-idle.cpu[0], 0)) / float64(k))
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", k, pct(sum(r.cpu), window), pct(r.cpu[0], window),
			pct(r.cpu[1], window), pct(r.cpu[2], window), pct2(perReplica, window), pct2(perMaster, window), backends(r.backends))
		fmt.Fprintf(os.Stderr, "fleetbench: %d Managers measured\n", k)
		time.Sleep(time.Second) // the servers' backends exit
	}
	return w.Flush()
}

type sample struct {
	cpu      []time.Duration // per node, every postgres process of it
	backends []int           // client backends per node, the harness's own excluded
}

// measure reads the servers' CPU over window, then counts backends.
func measure(c *testcluster.Cluster, window time.Duration) (sample, error) {
	nodes := c.Nodes()
	before := serverCPU(c, nodes)
	start := time.Now()
	time.Sleep(window)
	after := serverCPU(c, nodes)
	elapsed := time.Since(start)
	s := sample{cpu: make([]time.Duration, len(nodes)), backends: make([]int, len(nodes))}
	for pid, a := range after {
		// A process that started in the window counts whole; one that
		// ended in it is missed (the Managers' backends live throughout).
		d := a.cpu - before[pid].cpu
		// Scaled to the window exactly.
		s.cpu[a.node] += time.Duration(float64(d) * float64(window) / float64(elapsed))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, n := range nodes {
		conn, err := n.Conn(ctx)
		if err != nil {
			return s, fmt.Errorf("%s: %w", n, err)
		}
		err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`).Scan(&s.backends[i])
		conn.Close(ctx)
		if err != nil {
			return s, fmt.Errorf("%s: %w", n, err)
		}
	}
	return s, nil
}

// serverCPU sums, per node, the CPU time of every process of its server: the postmaster (its -D names the node's data directory) and
// its children (their titles begin with "postgres: <cluster_name>:").
type proc struct {
	node int
	cpu  time.Duration
}

func serverCPU(c *testcluster.Cluster, nodes []*testcluster.Node) map[int]proc {
	out := map[int]proc{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if err != nil {
			continue
		}
		i := nodeOf(c, nodes, cmd)
		if i < 0 {
			continue
		}
		// schedstat's first field is the time the process ran, in
		// nanoseconds, as the scheduler counts it: exact, where the
		// user and system times of /proc/PID/stat are sampled at clock
		// ticks, which checks that fall due together, shorter than a
		// tick and in step with it, can miss or hit wholesale.
		b, err := os.ReadFile("/proc/" + d.Name() + "/schedstat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 1 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		out[pid] = proc{node: i, cpu: time.Duration(ns)}
	}
	return out
}

func nodeOf(c *testcluster.Cluster, nodes []*testcluster.Node, cmdline []byte) int {
	args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
	if len(args) == 0 {
		return -1
	}
	for i, n := range nodes {
		if bytes.HasPrefix(args[0], []byte("postgres: "+n.Name()+": ")) {
			return i
		}
	}
	if filepath.Base(string(args[0])) != "postgres" {
		return -1
	}
	for j, a := range args {
		if string(a) == "-D" && j+1 < len(args) {
			for i, n := range nodes {
				if string(args[j+1]) == filepath.Join(c.Dir(), n.Name()) {
					return i
				}
			}
		}
	}
	return -1
}

func sum(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t
}

func pct(d, window time.Duration) string {
	return fmt.Sprintf("%.1f%%", 100*d.Seconds()/window.Seconds())
}

func pct2(d, window time.Duration) string {
	return fmt.Sprintf("%.3f%%", 100*d.Seconds()/window.Seconds())
}

func backends(b []int) string {
	parts := make([]string, len(b))
	for i, v := range b {
		parts[i] = strconv.Itoa(v)
	}
	return strings.Join(parts, " / ")
}
