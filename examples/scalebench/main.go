// Command scalebench measures what the Manager itself costs as the cluster
// grows: CPU and memory of a process that runs only a Manager with default
// settings, against 3, 16 and 64 nodes. The nodes are a local 3-node cluster
// seen through many addresses (testcluster aliases: a proxy each), 1 master
// and the rest replicas, so every node has its own check connection and, on
// replicas, its promotion watcher.
//
//	go run ./examples/scalebench
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

var cpuProfile string

type result struct {
	Nodes      int     `json:"nodes"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// ServerCPUSeconds is what every postgres process on the machine used
	// in the window: the cluster's own upkeep plus the checks and watchers.
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	Window           float64 `json:"window_seconds"`
	HeapInuse        uint64  `json:"heap_inuse"`
	Sys              uint64  `json:"sys"`
	Goroutines       int     `json:"goroutines"`
}

func main() {
	child := flag.String("child", "", "run as the measured process against this DSN")
	nodes := flag.String("nodes", "3,16,64", "node counts")
	window := flag.Duration("window", 20*time.Second, "measurement window")
	warmup := flag.Duration("warmup", 5*time.Second, "time before measuring")
	settings := flag.String("settings", "", "extra DSN settings for the Manager, e.g. `hasql_watch_promotion=false&hasql_check_interval=1s`")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the measured window to `file`.N (N: node count)")
	flag.Parse()
	var err error
	if *child != "" {
		err = measure(*child, *window, *warmup)
	} else {
		err = run(*nodes, *settings, *window, *warmup)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scalebench:", err)
		os.Exit(1)
	}
}

func run(counts, settings string, window, warmup time.Duration) error {
	extra, err := url.ParseQuery(settings)
	if err != nil {
		return fmt.Errorf("-settings: %w", err)
	}
	ctx := context.Background()
	c, err := testcluster.Start(ctx, testcluster.Options{})
	if err != nil {
		return err
	}
	defer c.Stop()
	desc := fmt.Sprintf("default settings (check interval %s)", hasql.DefaultCheckInterval)
	if settings != "" {
		desc = "settings " + settings
	}
	fmt.Printf("scalebench: Manager with %s, %s window after %s, %d CPUs\n\n", desc, window, warmup, runtime.NumCPU())
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "nodes\tCPU (% of one core)\tper node (µs CPU/s)\theap in use\tgoroutines\tservers' CPU (% of one core)\t")
	for _, s := range strings.Split(counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 2 {
			return fmt.Errorf("bad node count %q", s)
		}
		hosts := []string{c.Nodes()[0].Addr()}
		for i := 1; i < n; i++ {
			a, err := c.Nodes()[1+(i-1)%2].Alias()
			if err != nil {
				return err
			}
			hosts = append(hosts, a)
		}
		u, _ := url.Parse(c.DSN())
		u.Host = strings.Join(hosts, ",")
		q := u.Query()
		for k, v := range extra {
			q[k] = v
		}
		u.RawQuery = q.Encode()
		args := []string{"-child", u.String(), "-window", window.String(), "-warmup", warmup.String()}
		if cpuProfile != "" {
			args = append(args, "-cpuprofile", fmt.Sprintf("%s.%d", cpuProfile, n))
		}
		cmd := exec.Command(os.Args[0], args...)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("%d nodes: %w", n, err)
		}
		var r result
		if err := json.Unmarshal(out, &r); err != nil {
			return fmt.Errorf("%d nodes: %w: %s", n, err, out)
		}
		pct := 100 * r.CPUSeconds / r.Window
		fmt.Fprintf(w, "%d\t%.2f%%\t%.0f\t%.1f MiB\t%d\t%.1f%%\t\n", n, pct, 1e6*r.CPUSeconds/r.Window/float64(n),
			float64(r.HeapInuse)/(1<<20), r.Goroutines, 100*r.ServerCPUSeconds/r.Window)
		fmt.Fprintf(os.Stderr, "scalebench: %d nodes measured\n", n)
	}
	return w.Flush()
}

// measure runs in the child: a Manager, and nothing else, measured.
func measure(dsn string, window, warmup time.Duration) error {
	ctx := context.Background()
	m, err := hasql.New(ctx, dsn, hasql.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return err
	}
	defer m.Close()
	n := len(m.Nodes())
	readyCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := m.WaitReady(readyCtx, 1, n-1); err != nil {
		return err
	}
	time.Sleep(warmup)
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	before, serverBefore, start := cpu(), serverCPU(), time.Now()
	time.Sleep(window)
	used, serverUsed, elapsed := cpu()-before, serverCPU()-serverBefore, time.Since(start)
	if cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return json.NewEncoder(os.Stdout).Encode(result{
		Nodes: n, CPUSeconds: used.Seconds(), ServerCPUSeconds: serverUsed.Seconds(), Window: elapsed.Seconds(),
		HeapInuse: ms.HeapInuse, Sys: ms.Sys, Goroutines: runtime.NumGoroutine(),
	})
}

func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPU sums the user and system time of every running process named
// postgres, from /proc (clock ticks of 10ms).
func serverCPU() time.Duration {
	dirs, _ := os.ReadDir("/proc")
	var ticks int64
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || s[open+1:end] != "postgres" {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + st
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}
