// Command testcluster starts a replicated PostgreSQL cluster on this machine,
// prints its DSN and each node's role, address, postmaster PID and data
// directory, and keeps it up until interrupted (Ctrl-C, SIGTERM or quit),
// then shuts it down and removes its files.
//
//	go run ./testcluster/cmd/testcluster -replicas 2 -sync 1
//	go run ./testcluster/cmd/testcluster -backend compose   (containers of docker-compose.replication.yml)
//
// With -attach it works on the compose project that `make compose-up`
// started (or another, by name) instead, and leaves it running: a command
// given after the flags runs once, else commands are read as below.
//
//	go run ./testcluster/cmd/testcluster -attach pgxha status
//	go run ./testcluster/cmd/testcluster -attach pgxha kill n1
//	go run ./testcluster/cmd/testcluster -attach pgxha failover n2
//
// While it runs it takes chaos commands, one a line, on its standard input
// and from a second invocation that names the cluster's directory:
//
//	go run ./testcluster/cmd/testcluster -ctl /tmp/pgxha-testcluster-123 kill n1
//	go run ./testcluster/cmd/testcluster -ctl /tmp/pgxha-testcluster-123 failover n2
//
// The commands: status; kill, stop, start, pause, resume, partition, heal,
// promote, failover, rejoin NODE; latency NODE DURATION; help; quit (see
// commandHelp).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/pgxha/pgxha/testcluster"
)

// controlSocket is the name of the control socket in the cluster's
// directory.
const controlSocket = "control.sock"

const commandHelp = `commands (NODE is n1, n2, ...):
  status                   every node: role, address, PID, data directory, faults
  kill NODE                crash: SIGKILL to the postmaster and every backend
  stop NODE | start NODE   clean shutdown | start again
  pause NODE | resume NODE SIGSTOP | SIGCONT: the node hangs
  partition NODE | heal NODE  its proxy black-holes traffic | lets it through
  latency NODE DURATION    delay every chunk through its proxy (0 to end)
  promote NODE             pg_promote() alone (a split brain if the master runs)
  failover NODE            promote NODE and repoint the others to it
  rejoin NODE              rewind NODE from the master and start it as a replica
                           (an old master, or a replica left detached on an old timeline)
  converge                 undo every fault and bring every node back as a replica of the master
  quit                     stop the cluster and exit
`

func main() {
	replicas := flag.Int("replicas", 2, "number of replicas beside the master (0 for a master alone)")
	syncReplicas := flag.Int("sync", 1, "how many of the replicas are synchronous")
	verbose := flag.Bool("v", false, "print progress lines")
	ctl := flag.String("ctl", "", "send a command to the running testcluster whose directory (or control socket) this is, print its answer and exit")
	backend := flag.String("backend", os.Getenv("PGXHA_TESTCLUSTER"), "local (processes, the default), compose (a new project of docker-compose.replication.yml) or patroni")
	attach := flag.String("attach", "", "work on this running compose project (pgxha is make compose-up's) instead of starting a cluster; a command after the flags runs once")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage:\n  testcluster [-replicas 2] [-sync 1] [-backend local] [-v]\n  testcluster -attach PROJECT [COMMAND [ARGS]]\n  testcluster -ctl DIR COMMAND [ARGS]\n\n")
		flag.PrintDefaults()
		fmt.Fprint(flag.CommandLine.Output(), "\n"+commandHelp)
	}
	flag.Parse()

	if *ctl != "" {
		if err := control(*ctl, strings.Join(flag.Args(), " "), os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "testcluster:", err)
			os.Exit(1)
		}
		return
	}
	var opts testcluster.Options
	var err error
	if *attach != "" {
		opts = testcluster.Options{Backend: testcluster.BackendCompose, ComposeProject: *attach}
		if line := strings.Join(flag.Args(), " "); line != "" {
			err = once(opts, line, *verbose)
		} else {
			err = run(opts, *verbose)
		}
	} else {
		syncSet := false
		flag.Visit(func(f *flag.Flag) { syncSet = syncSet || f.Name == "sync" })
		opts, err = clusterOptions(*replicas, *syncReplicas, syncSet)
		opts.Backend = testcluster.Backend(*backend)
		if err == nil {
			err = run(opts, *verbose)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testcluster:", err)
		os.Exit(1)
	}
}

// clusterOptions turns the -replicas and -sync flags into Options. -sync
// defaults to 1, which a master alone (-replicas 0) cannot have: there it
// defaults to 0, and only an explicit -sync above 0 is an error.
func clusterOptions(replicas, syncReplicas int, syncSet bool) (testcluster.Options, error) {
	switch {
	case replicas < 0:
		return testcluster.Options{}, fmt.Errorf("-replicas %d: want 0 (a master alone) or more", replicas)
	case syncReplicas < 0:
		return testcluster.Options{}, fmt.Errorf("-sync %d: want 0 or more", syncReplicas)
	case replicas == 0 && syncSet && syncReplicas > 0:
		return testcluster.Options{}, fmt.Errorf("-sync %d: a master alone (-replicas 0) has no replica to make synchronous", syncReplicas)
	case replicas == 0:
		return testcluster.Options{Replicas: -1}, nil // Options' way to say a master alone
	case syncReplicas > replicas:
		return testcluster.Options{}, fmt.Errorf("-sync %d: at most -replicas (%d)", syncReplicas, replicas)
	}
	return testcluster.Options{Replicas: replicas, SyncReplicas: syncReplicas}, nil
}

// once attaches to a running compose project, runs one command line on it
// and returns, leaving the project running.
func once(opts testcluster.Options, line string, verbose bool) error {
	if verbose {
		opts.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute) // a failover with rewinds fits
	defer cancel()
	c, err := testcluster.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer c.Stop() // leaves the project running
	if _, err := command(ctx, c, line, os.Stdout); err != nil {
		return err
	}
	return nil
}

func run(opts testcluster.Options, verbose bool) error {
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

	if p := c.ComposeProject(); p != "" && opts.ComposeProject != "" {
		fmt.Println("Attached to the compose project", p, "(left running when this ends)")
	}
	fmt.Println("DSN:", c.DSN())
	fmt.Println()
	printStatus(ctx, c, os.Stdout)
	fmt.Println()
	fmt.Println("Data and logs in", c.Dir())
	fmt.Printf("Type commands here (help lists them), or from another shell:\n  go run ./testcluster/cmd/testcluster -ctl %s kill n1\n", c.Dir())
	if opts.ComposeProject != "" {
		fmt.Println("Ctrl-C or quit ends this; the project keeps running.")
	} else {
		fmt.Println("Ctrl-C or quit stops the cluster.")
	}
	err = serve(ctx, c, os.Stdin, os.Stdout, filepath.Join(c.Dir(), controlSocket))
	fmt.Println("\nstopping...")
	return err
}

// serve runs commands from in (answers to out) and from connections to the
// control socket at sock, one at a time, until ctx ends, in ends or a quit
// command. Every goroutine it starts has ended when it returns, but for the
// reader of in, which ends with in.
func serve(ctx context.Context, c *testcluster.Cluster, in io.Reader, out io.Writer, sock string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_ = os.Remove(sock) // left by a process that was killed
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer os.Remove(sock)

	var mu sync.Mutex // one command at a time
	execute := func(line string, w io.Writer) (quit bool) {
		mu.Lock()
		defer mu.Unlock()
		quit, err := command(ctx, c, line, w)
		if err != nil {
			fmt.Fprintln(w, "error:", err)
		}
		return quit
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Add(1)
	go func() { // owned by serve: ends when ln is closed
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Minute)) // a failover with rewinds fits
				line, err := bufio.NewReader(conn).ReadString('\n')
				if err != nil && line == "" {
					return
				}
				if execute(line, conn) {
					cancel()
				}
			}()
		}
	}()

	lines := make(chan string)
	go func() { // ends with in (stdin ends with the process)
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			if !ok {
				// No more input (stdin closed, say </dev/null): keep
				// serving the socket until interrupted.
				lines = nil
				continue
			}
			if execute(line, out) {
				return nil
			}
		}
	}
}

// command runs one command line, writing its outcome to w; quit reports a
// quit command.
func command(ctx context.Context, c *testcluster.Cluster, line string, w io.Writer) (quit bool, err error) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return false, nil
	}
	verb, args := strings.ToLower(f[0]), f[1:]
	switch verb {
	case "help", "?":
		fmt.Fprint(w, commandHelp)
		return false, nil
	case "status":
		printStatus(ctx, c, w)
		return false, nil
	case "quit", "exit":
		fmt.Fprintln(w, "quitting")
		return true, nil
	case "converge":
		begin := time.Now()
		if err := c.Converge(ctx); err != nil {
			return false, err
		}
		fmt.Fprintf(w, "converge: done in %s\n", time.Since(begin).Round(time.Millisecond))
		printStatus(ctx, c, w)
		return false, nil
	}
	ops := map[string]func(*testcluster.Node) error{
		"kill":      (*testcluster.Node).Kill,
		"stop":      (*testcluster.Node).Stop,
		"start":     (*testcluster.Node).Start,
		"pause":     (*testcluster.Node).Pause,
		"resume":    (*testcluster.Node).Resume,
		"partition": (*testcluster.Node).Partition,
		"heal":      (*testcluster.Node).Heal,
		"promote":   func(n *testcluster.Node) error { return n.Promote(ctx) },
		"failover":  func(n *testcluster.Node) error { return c.Failover(ctx, n) },
		"rejoin":    func(n *testcluster.Node) error { return c.Rejoin(ctx, n) },
	}
	op, ok := ops[verb]
	if verb == "latency" {
		if len(args) != 2 {
			return false, errors.New("usage: latency NODE DURATION (such as 50ms; 0 ends it)")
		}
		d, err := time.ParseDuration(args[1])
		if err != nil || d < 0 {
			return false, fmt.Errorf("latency %q: want a duration such as 50ms", args[1])
		}
		op, ok, args = func(n *testcluster.Node) error { return n.SetLatency(d) }, true, args[:1]
	}
	if !ok {
		return false, fmt.Errorf("unknown command %q (help lists them)", verb)
	}
	if len(args) != 1 {
		return false, fmt.Errorf("usage: %s NODE", verb)
	}
	n := nodeNamed(c, args[0])
	if n == nil {
		return false, fmt.Errorf("no node %q: the nodes are %s", args[0], nodeNames(c))
	}
	begin := time.Now()
	if err := op(n); err != nil {
		return false, err
	}
	fmt.Fprintf(w, "%s %s: done in %s\n", verb, n.Name(), time.Since(begin).Round(time.Millisecond))
	printStatus(ctx, c, w)
	return false, nil
}

func nodeNamed(c *testcluster.Cluster, name string) *testcluster.Node {
	for _, n := range c.Nodes() {
		if n.Name() == name {
			return n
		}
	}
	return nil
}

func nodeNames(c *testcluster.Cluster) string {
	var names []string
	for _, n := range c.Nodes() {
		names = append(names, n.Name())
	}
	return strings.Join(names, ", ")
}

// printStatus writes one line per node: name, address, role as the node
// itself says (or why it cannot; see Cluster.Status), timeline, postmaster
// PID, data directory and the faults in force.
func printStatus(ctx context.Context, c *testcluster.Cluster, w io.Writer) {
	states := c.Status(ctx) // each node within its own bound, all at once
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tROLE\tTIMELINE\tPID\tDATA DIR\tFAULTS")
	for i, st := range states {
		role := st.Role
		if st.Err != nil {
			role += " (" + cause(st.Err.Error()) + ")"
		}
		n := c.Nodes()[i]
		pid := "-"
		if p := n.PID(); p > 0 {
			pid = fmt.Sprint(p)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", st.Name, st.Addr, role, st.Timeline, pid, orDash(n.DataDir()), orDash(st.Faults.String()))
	}
	tw.Flush()
}

// cause is the end of an error's last line: "connection refused" of
// pgx's "failed to connect to ...: dial tcp ...: connect: connection
// refused".
func cause(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		s = strings.TrimSpace(s[i+1:])
	}
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// control sends line to the running testcluster at dir (its directory or
// its control socket) and copies the answer to out. An answer that reports
// an error makes it fail.
func control(dir, line string, out io.Writer) error {
	if strings.TrimSpace(line) == "" {
		return errors.New("-ctl: no command (help lists them)")
	}
	sock := dir
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		sock = filepath.Join(dir, controlSocket)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return fmt.Errorf("no testcluster answers at %s: %w", sock, err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, line+"\n"); err != nil {
		return err
	}
	var answer strings.Builder
	if _, err := io.Copy(io.MultiWriter(out, &answer), conn); err != nil {
		return err
	}
	if strings.HasPrefix(answer.String(), "error:") {
		return errors.New("the command failed")
	}
	return nil
}
