// Command failover-demo shows a live failover: writers run through pgxha,
// the master is killed, a replica is promoted, and the roles and the write
// rate are printed as the client re-routes.
//
//	go run ./examples/failover-demo
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/internal/chaos"
	"github.com/pgxha/pgxha/testcluster"
)

type client struct{ m *hasql.Manager }

func (c client) Write(ctx context.Context, w, seq int) error {
	_, err := c.m.Master().Exec(ctx, chaos.InsertSQL, "demo", w, seq)
	return err
}
func (c client) Read(context.Context, int) error { return nil }

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "failover-demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	fmt.Println("Starting a local cluster: 1 master, 1 sync replica, 1 async replica...")
	c, err := testcluster.Start(ctx, testcluster.Options{})
	if err != nil {
		return err
	}
	defer c.Stop()
	m, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.WaitReady(ctx, 1, 2); err != nil {
		return err
	}
	if err := chaos.CreateTable(ctx, m.Master()); err != nil {
		return err
	}
	names := map[string]string{}
	for _, n := range c.Nodes() {
		names[n.Addr()] = n.Name()
	}
	fmt.Println("4 writers insert numbered rows through m.Master().Exec; every 250ms a line:")
	fmt.Println()
	load := chaos.Start(client{m}, chaos.Config{Writers: 4})

	start := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var lastAcked, lastErrs int
	var fault time.Time
	killed := false
	failoverDone := make(chan error, 1)
	for now := range tick.C {
		elapsed := now.Sub(start)
		if !killed && elapsed >= 2*time.Second {
			killed = true
			old, next := c.Master(), c.Nodes()[1]
			fmt.Printf("\n*** %5.2fs  killing the master %s; promoting %s ***\n\n", elapsed.Seconds(), old.Name(), next.Name())
			fault = time.Now()
			if err := old.Kill(); err != nil {
				return err
			}
			go func() { failoverDone <- c.Failover(ctx, next) }()
		}
		r := load.Snapshot()
		acked, errs := len(r.Acked()), len(r.WriteErrors())
		master := names[m.Stat().Master]
		if master == "" {
			master = "none"
		}
		fmt.Printf("  %5.2fs  writes/s %6d  errors %3d  master %-5s  %s\n", elapsed.Seconds(),
			(acked-lastAcked)*4, errs-lastErrs, master, roles(m, names))
		lastAcked, lastErrs = acked, errs
		if elapsed >= 5*time.Second {
			break
		}
	}
	res := load.Stop()
	if err := <-failoverDone; err != nil {
		return err
	}
	conn, err := c.Master().Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	lost, err := res.Lost(ctx, conn, "demo")
	if err != nil {
		return err
	}
	gap, _ := res.LongestGap(fault, fault)
	promoted := c.Master().PromotedAt()
	first, _ := res.FirstAckAfter(promoted)
	fmt.Printf("\nwrite outage %s; first write %s after the promotion completed; %d write errors (the writes in flight at the crash); %d acknowledged writes, %d lost\n",
		gap.Round(time.Millisecond), max(first.Sub(promoted), 0).Round(time.Millisecond), len(res.WriteErrors()), len(res.Acked()), len(lost))
	return nil
}

func roles(m *hasql.Manager, names map[string]string) string {
	var parts []string
	for _, n := range m.Nodes() {
		role := n.Role.String()
		if n.Role == hasql.RoleUnknown && !n.Up {
			role = "down"
		}
		parts = append(parts, names[n.Addr]+"="+role)
	}
	return strings.Join(parts, " ")
}
