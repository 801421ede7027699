package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgxha/pgxha/checker"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// runVersus runs, for each K, rounds pairs of windows: K Managers, then K
// role checkers (the order alternating from one round to the next), and
// prints what each side added to the idle cluster and their ratio.
func runVersus(counts, settings, bouncer string, window, warmup time.Duration, rounds int) error {
	if rounds < 1 {
		return fmt.Errorf("-rounds %d: want 1 or more", rounds)
	}
	b, err := setup(counts, settings, bouncer)
	if err != nil {
		return err
	}
	defer b.c.Stop()
	c, ks, interval, desc := b.c, b.ks, b.interval, b.desc
	ctx := context.Background()
	fmt.Printf("fleetbench -versus: K Managers with %s against K role checks (prepared SELECT pg_is_in_recovery() on every node every %s),\n"+
		"3-node cluster (master, sync, async), %d rounds of a %s window each after %s, %s/%s, %d CPUs\n\n",
		desc, interval, rounds, window, warmup, runtime.GOOS, runtime.GOARCH, runtime.NumCPU())

	idle, err := measure(c, window)
	if err != nil {
		return err
	}
	base := sum(idle.cpu)
	fmt.Printf("idle cluster: %s of a core\n", pct(base, window))
	names := []string{"master", "sync", "async"}
	for _, k := range ks {
		managers := make([]time.Duration, len(idle.cpu))
		roles := make([]time.Duration, len(idle.cpu))
		for r := range rounds {
			sides := []func() ([]time.Duration, error){
				func() ([]time.Duration, error) { return managersWindow(ctx, b, k, window, warmup) },
				func() ([]time.Duration, error) { return rolesWindow(ctx, c, k, interval, window, warmup) },
			}
			if r%2 == 1 {
				sides[0], sides[1] = sides[1], sides[0]
			}
			for i, side := range sides {
				d, err := side()
				if err != nil {
					return err
				}
				to := roles
				if (i == 0) == (r%2 == 0) {
					to = managers
				}
				for n := range d {
					to[n] += d[n]
				}
			}
			fmt.Fprintf(os.Stderr, "fleetbench: %d: round %d of %d measured (Managers %s, role checks %s so far)\n", k, r+1, rounds, pct(sum(managers), window), pct(sum(roles), window))
		}
		// What each side added to the idle cluster, per window: in all,
		// then node by node (a master's check reads more than a
		// replica's).
		added := func(total, idle time.Duration) time.Duration {
			return max(total-time.Duration(rounds)*idle, 0) / time.Duration(rounds)
		}
		ratio := func(m, r time.Duration) string {
			if r <= 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.2f", float64(m)/float64(r))
		}
		mAdd, rAdd := added(sum(managers), base), added(sum(roles), base)
		fmt.Printf("%d: Managers add %s of a core, role checks %s: ratio %s\n", k, pct2(mAdd, window), pct2(rAdd, window), ratio(mAdd, rAdd))
		for n := range managers {
			name := fmt.Sprintf("node %d", n)
			if n < len(names) {
				name = names[n]
			}
			m, r := added(managers[n], idle.cpu[n]), added(roles[n], idle.cpu[n])
			fmt.Printf("   %-6s Managers %s, role checks %s: ratio %s\n", name, pct2(m, window), pct2(r, window), ratio(m, r))
		}
	}
	return nil
}

// managersWindow measures each server's CPU with k Managers running.
func managersWindow(ctx context.Context, b *bench, k int, window, warmup time.Duration) ([]time.Duration, error) {
	var opts []hasql.Option
	if roleOnly {
		opts = append(opts, hasql.WithChecker(roleChecker{}))
	}
	ms, err := startManagers(ctx, b, k, opts...)
	defer func() {
		for _, m := range ms {
			m.Close()
		}
		time.Sleep(time.Second) // the servers' backends exit
	}()
	if err != nil {
		return nil, err
	}
	time.Sleep(warmup)
	s, err := measure(b.c, window)
	return s.cpu, err
}

// rolesWindow measures each server's CPU with k role checkers running: each
// has a connection to every node and runs the prepared SELECT
// pg_is_in_recovery() on all of them every interval.
func rolesWindow(ctx context.Context, c *testcluster.Cluster, k int, interval, window, warmup time.Duration) ([]time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var conns []*pgx.Conn
	defer func() {
		cancel()
		wg.Wait()
		for _, conn := range conns {
			conn.Close(context.Background())
		}
		time.Sleep(time.Second)
	}()
	errs := make(chan error, k*len(c.Nodes()))
	for range k {
		for _, n := range c.Nodes() {
			conn, err := pgx.Connect(ctx, n.DSN())
			if err != nil {
				return nil, err
			}
			conns = append(conns, conn)
		}
	}
	start := time.Now()
	for i, conn := range conns {
		// Instance i/nodes checks its nodes together, at its own phase:
		// the instances are spread over the interval, as the Managers are
		// (see managersWindow).
		phase := time.Duration(i/len(c.Nodes())) * interval / time.Duration(k)
		wg.Add(1)
		go func() {
			defer wg.Done()
			timer := time.NewTimer(phase)
			defer timer.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
				var rec bool
				if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
					if !errors.Is(err, context.Canceled) {
						errs <- fmt.Errorf("role check %d: %w", i, err)
					}
					return
				}
				timer.Reset(interval - (time.Since(start)-phase)%interval)
			}
		}()
	}
	time.Sleep(warmup)
	s, err := measure(c, window)
	select {
	case e := <-errs:
		return nil, e
	default:
	}
	return s.cpu, err
}

// roleOnly (-role-only) gives the Managers roleChecker: what is left of
// their cost is the Manager's own (connections, their upkeep), beyond what
// its check asks of the server.
var roleOnly bool

// roleChecker asks the minimal role check's question and nothing more.
type roleChecker struct{}

func (roleChecker) Check(ctx context.Context, conn *pgx.Conn) (checker.Result, error) {
	var rec bool
	err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec)
	return checker.Result{InRecovery: rec, ReadOnly: rec, ServerTime: time.Now(), Timeline: 1}, err
}
