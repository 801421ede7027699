// Command testcluster starts a replicated PostgreSQL cluster on this machine,
// prints its DSN and each node's role, and keeps it up until interrupted
// (Ctrl-C or SIGTERM), then shuts it down and removes its files.
//
//	go run ./testcluster/cmd/testcluster -replicas 2 -sync 1
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/pgxha/pgxha/testcluster"
)

func main() {
	replicas := flag.Int("replicas", 2, "number of replicas beside the master (0 for a master alone)")
	syncReplicas := flag.Int("sync", 1, "how many of the replicas are synchronous")
	verbose := flag.Bool("v", false, "print progress lines")
	flag.Parse()

	if err := run(*replicas, *syncReplicas, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "testcluster:", err)
		os.Exit(1)
	}
}

func run(replicas, syncReplicas int, verbose bool) error {
	if replicas == 0 {
		replicas = -1
	}
	opts := testcluster.Options{Replicas: replicas, SyncReplicas: syncReplicas}
	if verbose {
		opts.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	c, err := testcluster.Start(startCtx, opts)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "testcluster: stop:", err)
		}
	}()

	fmt.Println("DSN:", c.DSN())
	fmt.Println()
	statusCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	states := c.Status(statusCtx)
	cancel()
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tADDRESS\tROLE\tTIMELINE")
	for _, st := range states {
		role := st.Role
		if st.Err != nil {
			role += " (" + st.Err.Error() + ")"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\n", st.Name, st.Addr, role, st.Timeline)
	}
	w.Flush()
	fmt.Println()
	fmt.Println("Data and logs in", c.Dir())
	fmt.Println("Press Ctrl-C to stop the cluster.")
	<-ctx.Done()
	fmt.Println("\nstopping...")
	return nil
}
