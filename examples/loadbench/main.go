// Command loadbench compares routed throughput through pgxha with plain
// pgxpools on the same nodes, in the same run: G goroutines run a
// read-mostly mix (reads by primary key on the replicas, updates on the
// master) through each client in turn, in alternating slices so that both
// see the same machine. It prints throughput and p50/p99 latency per client
// and their ratio, optionally runs pgbench (select-only, on a replica) as an
// outside reference of what the node can serve, and can write an SVG chart
// of throughput against goroutines.
//
//	go run ./examples/loadbench -goroutines 1,2,4,8,16,32 -duration 6s -chart docs/throughput.svg -pgbench
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

const rows = 10000

type client interface {
	read(ctx context.Context, id int) error
	write(ctx context.Context, id int) error
}

type pgxhaClient struct{ m *hasql.Manager }

func (c pgxhaClient) read(ctx context.Context, id int) error {
	var v int64
	return c.m.Replica().QueryRow(ctx, "SELECT v FROM kv WHERE id = $1", id).Scan(&v)
}

func (c pgxhaClient) write(ctx context.Context, id int) error {
	_, err := c.m.Master().Exec(ctx, "UPDATE kv SET v = v + 1 WHERE id = $1", id)
	return err
}

// plainClient does by hand what pgxha does: reads round robin over the
// replicas' pools, writes to the master's.
type plainClient struct {
	master   *pgxpool.Pool
	replicas []*pgxpool.Pool
	next     atomic.Uint64
}

func (c *plainClient) read(ctx context.Context, id int) error {
	p := c.replicas[c.next.Add(1)%uint64(len(c.replicas))]
	var v int64
	return p.QueryRow(ctx, "SELECT v FROM kv WHERE id = $1", id).Scan(&v)
}

func (c *plainClient) write(ctx context.Context, id int) error {
	_, err := c.master.Exec(ctx, "UPDATE kv SET v = v + 1 WHERE id = $1", id)
	return err
}

// stats is one client's figures at one concurrency.
type stats struct {
	ops       int64
	elapsed   time.Duration
	latencies []time.Duration
}

func (s *stats) opsPerSec() float64 { return float64(s.ops) / s.elapsed.Seconds() }

func (s *stats) pct(p float64) time.Duration {
	if len(s.latencies) == 0 {
		return 0
	}
	sort.Slice(s.latencies, func(i, j int) bool { return s.latencies[i] < s.latencies[j] })
	return s.latencies[min(int(p*float64(len(s.latencies))), len(s.latencies)-1)]
}

func main() {
	gs := flag.String("goroutines", "1,2,4,8,16,32", "concurrency levels")
	duration := flag.Duration("duration", 6*time.Second, "time per client per level (in slices)")
	slices := flag.Int("slices", 6, "alternating slices per level")
	writeRatio := flag.Float64("writes", 0.1, "share of writes")
	chart := flag.String("chart", "", "write an SVG chart of throughput to this file")
	pgbench := flag.Bool("pgbench", false, "also run pgbench -S on a replica at each level")
	flag.Parse()
	if err := run(*gs, *duration, *slices, *writeRatio, *chart, *pgbench); err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(1)
	}
}

func run(gs string, duration time.Duration, slices int, writeRatio float64, chart string, withPgbench bool) error {
	ctx := context.Background()
	var levels []int
	for _, s := range strings.Split(gs, ",") {
		g, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || g < 1 {
			return fmt.Errorf("bad goroutine count %q", s)
		}
		levels = append(levels, g)
	}
	maxG := levels[len(levels)-1]
	c, err := testcluster.Start(ctx, testcluster.Options{Settings: map[string]string{"max_connections": "400"}})
	if err != nil {
		return err
	}
	defer c.Stop()
	// Both clients talk to the servers directly (not through the fault
	// proxies, which would run in this process).
	direct := func(nodes ...*testcluster.Node) string {
		u, _ := url.Parse(c.DSN())
		var hosts []string
		for _, n := range nodes {
			hosts = append(hosts, n.DirectAddr())
		}
		u.Host = strings.Join(hosts, ",")
		q := u.Query()
		q.Set("pool_max_conns", strconv.Itoa(maxG))
		u.RawQuery = q.Encode()
		return u.String()
	}
	nodes := c.Nodes()
	m, err := hasql.New(ctx, direct(nodes...), hasql.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.WaitReady(ctx, 1, 2); err != nil {
		return err
	}
	plain := &plainClient{}
	if plain.master, err = pgxpool.New(ctx, direct(nodes[0])); err != nil {
		return err
	}
	defer plain.master.Close()
	for _, n := range nodes[1:] {
		p, err := pgxpool.New(ctx, direct(n))
		if err != nil {
			return err
		}
		defer p.Close()
		plain.replicas = append(plain.replicas, p)
	}
	if _, err := m.Master().Exec(ctx, "CREATE TABLE kv (id int PRIMARY KEY, v bigint NOT NULL)"); err != nil {
		return err
	}
	if _, err := m.Master().Exec(ctx, "INSERT INTO kv SELECT g, 0 FROM generate_series(1, $1) g", rows); err != nil {
		return err
	}
	lsn, err := m.CurrentLSN(ctx)
	if err != nil {
		return err
	}
	for _, n := range nodes[1:] {
		if err := waitReplay(ctx, n, lsn); err != nil {
			return err
		}
	}
	if withPgbench {
		if err := pgbenchInit(ctx, c); err != nil {
			return err
		}
	}

	fmt.Printf("loadbench: %.0f%% reads by primary key on the replicas, %.0f%% updates on the master; %s per client per level in %d alternating slices\n",
		100*(1-writeRatio), 100*writeRatio, duration, slices)
	fmt.Printf("machine: %s/%s, %d CPUs, %s; PostgreSQL and the clients on the same machine\n\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpuModel())
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "goroutines\tpgxha ops/s\tp50\tp99\tpgxpool ops/s\tp50\tp99\tratio\t"
	if withPgbench {
		header += "pgbench -S tps\t"
	}
	fmt.Fprintln(w, header)
	var points [][3]float64
	for _, g := range levels {
		ours, theirs := &stats{}, &stats{}
		slice := duration / time.Duration(slices)
		for i := 0; i < slices; i++ {
			// Alternate which goes first, so drift hits both alike.
			if i%2 == 0 {
				load(ctx, pgxhaClient{m}, g, slice, writeRatio, ours)
				load(ctx, plain, g, slice, writeRatio, theirs)
			} else {
				load(ctx, plain, g, slice, writeRatio, theirs)
				load(ctx, pgxhaClient{m}, g, slice, writeRatio, ours)
			}
		}
		line := fmt.Sprintf("%d\t%.0f\t%s\t%s\t%.0f\t%s\t%s\t%.3f\t", g, ours.opsPerSec(), us(ours.pct(0.5)), us(ours.pct(0.99)),
			theirs.opsPerSec(), us(theirs.pct(0.5)), us(theirs.pct(0.99)), ours.opsPerSec()/theirs.opsPerSec())
		if withPgbench {
			tps, err := pgbench(ctx, c, nodes[1], g, duration/2)
			if err != nil {
				return err
			}
			line += fmt.Sprintf("%.0f\t", tps)
		}
		fmt.Fprintln(w, line)
		fmt.Fprintf(os.Stderr, "  %d goroutines: pgxha %.0f ops/s, pgxpool %.0f ops/s\n", g, ours.opsPerSec(), theirs.opsPerSec())
		points = append(points, [3]float64{float64(g), ours.opsPerSec(), theirs.opsPerSec()})
	}
	w.Flush()
	if chart != "" {
		if err := os.MkdirAll(filepath.Dir(chart), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(chart, []byte(svg(points)), 0o644); err != nil {
			return err
		}
		fmt.Println("\nchart written to", chart)
	}
	return nil
}

// load runs g goroutines through cl for d and adds to s.
func load(ctx context.Context, cl client, g int, d time.Duration, writeRatio float64, s *stats) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ops atomic.Int64
	deadline := time.Now().Add(d)
	start := time.Now()
	for i := 0; i < g; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) {
				id := 1 + rand.IntN(rows)
				t := time.Now()
				var err error
				if rand.Float64() < writeRatio {
					err = cl.write(ctx, id)
				} else {
					err = cl.read(ctx, id)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "loadbench: operation failed:", err)
					os.Exit(1)
				}
				lat = append(lat, time.Since(t))
				ops.Add(1)
			}
			mu.Lock()
			s.latencies = append(s.latencies, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	s.elapsed += time.Since(start)
	s.ops += ops.Load()
}

func waitReplay(ctx context.Context, n *testcluster.Node, lsn hasql.LSN) error {
	conn, err := n.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for i := 0; i < 3000; i++ {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn.String()).Scan(&ok); err != nil {
			return err
		}
		if ok {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s did not replay %s", n, lsn)
}

func pgbenchPath() string {
	bin, err := testcluster.FindBinDir()
	if err != nil {
		return "pgbench"
	}
	return filepath.Join(bin, "pgbench")
}

func pgbenchInit(ctx context.Context, c *testcluster.Cluster) error {
	n := c.Nodes()[0]
	cmd := exec.CommandContext(ctx, pgbenchPath(), "-i", "-s", "10", "-q", n.DirectDSN())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	lsnConn, err := n.Conn(ctx)
	if err != nil {
		return err
	}
	defer lsnConn.Close(ctx)
	lsn, err := hasql.CurrentLSN(ctx, lsnConn)
	if err != nil {
		return err
	}
	for _, r := range c.Nodes()[1:] {
		if err := waitReplay(ctx, r, lsn); err != nil {
			return err
		}
	}
	return nil
}

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+)`)

// pgbench runs pgbench's select-only script on one replica, as an outside
// reference of what that node serves.
func pgbench(ctx context.Context, c *testcluster.Cluster, n *testcluster.Node, g int, d time.Duration) (float64, error) {
	secs := max(1, int(d.Seconds()))
	cmd := exec.CommandContext(ctx, pgbenchPath(), "-n", "-S", "-c", strconv.Itoa(g), "-j", strconv.Itoa(min(g, runtime.NumCPU())),
		"-T", strconv.Itoa(secs), n.DirectDSN())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	mm := tpsLine.FindSubmatch(out)
	if mm == nil {
		return 0, fmt.Errorf("pgbench: no tps in output:\n%s", out)
	}
	return strconv.ParseFloat(string(mm[1]), 64)
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond)) }

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			if _, v, ok := strings.Cut(line, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown CPU"
}

// svg draws throughput against goroutines for both clients.
func svg(points [][3]float64) string {
	const W, H, left, right, top, bottom = 640.0, 400.0, 70.0, 20.0, 40.0, 50.0
	maxY := 0.0
	for _, p := range points {
		maxY = max(maxY, p[1], p[2])
	}
	maxY *= 1.1
	n := len(points)
	x := func(i int) float64 {
		if n == 1 {
			return left + (W-left-right)/2
		}
		return left + float64(i)*(W-left-right)/float64(n-1)
	}
	y := func(v float64) float64 { return top + (H-top-bottom)*(1-v/maxY) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="22" text-anchor="middle" font-size="14">Routed throughput: pgxha vs plain pgxpool (ops/s)</text>`+"\n", W/2)
	for k := 0; k <= 4; k++ {
		v := maxY * float64(k) / 4
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), W-right, y(v))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%.0f</text>`+"\n", left-6, y(v)+4, v)
	}
	for i, p := range points {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%.0f</text>`+"\n", x(i), H-bottom+18, p[0])
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">goroutines</text>`+"\n", (W+left)/2, H-10)
	for series, color := range map[int]string{1: "#1f77b4", 2: "#ff7f0e"} {
		var pts []string
		for i, p := range points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(p[series])))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		for i, p := range points {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(i), y(p[series]), color)
		}
	}
	fmt.Fprintf(&b, `<rect x="%.0f" y="48" width="12" height="3" fill="#1f77b4"/><text x="%.0f" y="53">pgxha (m.Replica / m.Master)</text>`+"\n", left+10, left+28)
	fmt.Fprintf(&b, `<rect x="%.0f" y="66" width="12" height="3" fill="#ff7f0e"/><text x="%.0f" y="71">plain pgxpool per node</text>`+"\n", left+10, left+28)
	b.WriteString("</svg>\n")
	return b.String()
}
