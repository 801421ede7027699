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
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

type result struct {
	Nodes      int     `json:"nodes"`
	CPUSeconds float64 `json:"cpu_seconds"`
	Window     float64 `json:"window_seconds"`
	HeapInuse  uint64  `json:"heap_inuse"`
	Sys        uint64  `json:"sys"`
	Goroutines int     `json:"goroutines"`
}

func main() {
	child := flag.String("child", "", "run as the measured process against this DSN")
	nodes := flag.String("nodes", "3,16,64", "node counts")
	window := flag.Duration("window", 20*time.Second, "measurement window")
	warmup := flag.Duration("warmup", 5*time.Second, "time before measuring")
	flag.Parse()
	var err error
	if *child != "" {
		err = measure(*child, *window, *warmup)
	} else {
		err = run(*nodes, *window, *warmup)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scalebench:", err)
		os.Exit(1)
	}
}

func run(counts string, window, warmup time.Duration) error {
	ctx := context.Background()
	c, err := testcluster.Start(ctx, testcluster.Options{})
	if err != nil {
		return err
	}
	defer c.Stop()
	fmt.Printf("scalebench: Manager with default settings (check interval %s), %s window after %s, %d CPUs\n\n",
		hasql.DefaultCheckInterval, window, warmup, runtime.NumCPU())
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "nodes\tCPU (% of one core)\tper node (µs CPU/s)\theap in use\tgoroutines\t")
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
		cmd := exec.Command(os.Args[0], "-child", u.String(), "-window", window.String(), "-warmup", warmup.String())
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
		fmt.Fprintf(w, "%d\t%.2f%%\t%.0f\t%.1f MiB\t%d\t\n", n, pct, 1e6*r.CPUSeconds/r.Window/float64(n),
			float64(r.HeapInuse)/(1<<20), r.Goroutines)
		w.Flush()
	}
	return nil
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
	before, start := cpu(), time.Now()
	time.Sleep(window)
	used, elapsed := cpu()-before, time.Since(start)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return json.NewEncoder(os.Stdout).Encode(result{
		Nodes: n, CPUSeconds: used.Seconds(), Window: elapsed.Seconds(),
		HeapInuse: ms.HeapInuse, Sys: ms.Sys, Goroutines: runtime.NumGoroutine(),
	})
}

func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
