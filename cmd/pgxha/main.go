package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgxha/pgxha/hasql"
)

// Exit statuses.
const (
	exitOK       = 0
	exitError    = 1 // usage and other errors
	exitNoMaster = 2 // status found no master
)

// dsnEnv names the environment variable that holds the DSN when the command
// line does not.
const dsnEnv = "PGXHA_DSN"

const usage = `Usage:
  pgxha status [-json] [-wait 2s] [-v] [-dsn-file FILE | DSN]
  pgxha watch  [-json] [-interval 1s] [-v] [-dsn-file FILE | DSN]

status prints each node's role, sync state, timeline, LSN, replication lag,
check latency and last error once; watch redraws it until interrupted.
` + dsnHelp + `Run "pgxha status -h" or "pgxha watch -h" for the flags.
`

// dsnHelp says where the DSN comes from.
const dsnHelp = `The DSN, a multi-host PostgreSQL connection string, is read from $PGXHA_DSN,
or from a file (-dsn-file FILE) or standard input (-dsn-file -). Given as an
argument it works too, but any user of the machine can read it, password
included, in the process list (/proc/PID/cmdline).
`

// stdin is where -dsn-file - reads; tests replace it.
var stdin io.Reader = os.Stdin

// maxDSNFile bounds what -dsn-file reads.
const maxDSNFile = 64 << 10

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options is a parsed command line.
type options struct {
	cmd      string // "status" or "watch"
	dsn      string
	dsnFile  string // -dsn-file: a path, or "-" for standard input
	dsnArg   bool   // the DSN was a command-line argument
	json     bool
	wait     time.Duration // status
	interval time.Duration // watch
	verbose  bool
	terminal bool // standard output is a terminal
}

// run runs the command line args (without the program name) and returns the
// exit status. status returns when done; watch runs until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// Whatever is printed, the password of any connection string given is
	// not: errors from flag parsing may quote arguments, errors from the
	// server may quote the connection's settings.
	red := newRedactor(append(slices.Clone(args), os.Getenv(dsnEnv))...)
	terminal := isTerminal(stdout) // before it is wrapped
	rawOut, rawErr := stdout, stderr
	stdout, stderr = red.Writer(stdout), red.Writer(stderr)

	o, code, ok := parseArgs(args, stdout, stderr)
	if !ok {
		return code
	}
	// The DSN may come from a file: its password is hidden too.
	red = newRedactor(append(slices.Clone(args), os.Getenv(dsnEnv), o.dsn)...)
	stdout, stderr = red.Writer(rawOut), red.Writer(rawErr)
	if o.dsnArg && hasPassword(o.dsn) {
		fmt.Fprintf(stderr, "pgxha: warning: the DSN on the command line holds a password, which any user of this machine can read in the process list; give it in $%s or with -dsn-file\n", dsnEnv)
	}
	o.terminal = terminal
	if o.cmd == "watch" {
		return watch(ctx, o, red, stdout, stderr)
	}
	return status(ctx, o, red, stdout, stderr)
}

// parseArgs parses the command line. When it returns ok false, it has
// printed why (or the help asked for) and code is the exit status.
func parseArgs(args []string, stdout, stderr io.Writer) (o options, code int, ok bool) {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return o, exitError, false
	}
	switch o.cmd = args[0]; o.cmd {
	case "status", "watch":
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return o, exitOK, false
	default:
		fmt.Fprintf(stderr, "pgxha: unknown command %q: want status or watch\n\n%s", o.cmd, usage)
		return o, exitError, false
	}

	fs := flag.NewFlagSet("pgxha "+o.cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.json, "json", false, "print JSON instead of a table (watch: one document per line)")
	fs.BoolVar(&o.verbose, "v", false, "log role changes and node errors to standard error")
	fs.StringVar(&o.dsnFile, "dsn-file", "", "read the DSN from this file (- for standard input) instead of $"+dsnEnv)
	if o.cmd == "status" {
		fs.DurationVar(&o.wait, "wait", 2*time.Second, "how long to wait for a complete view (a master, every node that answers classified); 0: print after the first round of checks")
	} else {
		fs.DurationVar(&o.interval, "interval", time.Second, "time between two redraws")
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: pgxha %s [flags] [-dsn-file FILE | DSN]\n\n%s\nFlags:\n", o.cmd, dsnHelp)
		fs.PrintDefaults()
	}
	usageError := func(format string, args ...any) (options, int, bool) {
		fmt.Fprintf(stderr, "pgxha %s: %s\nRun \"pgxha %s -h\" for usage.\n", o.cmd, fmt.Sprintf(format, args...), o.cmd)
		return o, exitError, false
	}

	positional, err := parseInterspersed(fs, args[1:])
	switch {
	case errors.Is(err, flag.ErrHelp):
		return o, exitOK, false
	case err != nil:
		return o, exitError, false // the flag package said why
	case len(positional) > 1:
		return usageError("too many arguments (%d): want at most one DSN; quote a keyword/value DSN", len(positional))
	case len(positional) == 1 && o.dsnFile != "":
		return usageError("a DSN argument and -dsn-file: give one of them")
	case len(positional) == 1:
		o.dsn, o.dsnArg = positional[0], true
	case o.dsnFile != "":
		dsn, err := readDSN(o.dsnFile)
		if err != nil {
			return usageError("-dsn-file: %v", err)
		}
		o.dsn = dsn
	default:
		o.dsn = os.Getenv(dsnEnv)
	}
	switch {
	case strings.TrimSpace(o.dsn) == "":
		return usageError("no DSN: give one in $%s, with -dsn-file, or as the argument", dsnEnv)
	case o.wait < 0:
		return usageError("-wait %s: must not be negative", o.wait)
	case o.cmd == "watch" && o.interval <= 0:
		return usageError("-interval %s: must be positive", o.interval)
	}
	return o, exitOK, true
}

// readDSN reads a DSN from a file, or standard input for "-", spaces and
// line ends around it trimmed.
func readDSN(path string) (string, error) {
	var r io.Reader
	if path == "-" {
		r = stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxDSNFile+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxDSNFile {
		return "", fmt.Errorf("over %d bytes: not a DSN", maxDSNFile)
	}
	return strings.TrimSpace(string(b)), nil
}

// hasPassword reports whether a DSN holds a password.
func hasPassword(dsn string) bool {
	for _, pw := range passwordsOf(dsn) {
		if pw != "" {
			return true
		}
	}
	return false
}

// parseInterspersed parses flags placed before, between or after the
// positional arguments, which it returns. Everything after "--" is
// positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	return positional, nil
}

// connect makes the Manager, which checks every node once before it
// returns (see hasql.New).
func connect(ctx context.Context, o options, red redactor, stderr io.Writer) (*hasql.Manager, error) {
	logger := slog.New(slog.DiscardHandler)
	if o.verbose {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m, err := hasql.New(ctx, o.dsn, hasql.WithLogger(logger))
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(red.String(err.Error()), "hasql: "))
	}
	return m, nil
}

// status prints the view once, after waiting up to o.wait for it to be
// complete.
func status(ctx context.Context, o options, red redactor, stdout, stderr io.Writer) int {
	waitCtx := ctx
	if o.wait > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, o.wait)
		defer cancel()
	}
	m, err := connect(waitCtx, o, red, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "pgxha: %v\n", err)
		return exitError
	}
	defer m.Close()
	if o.wait > 0 {
		waitComplete(waitCtx, m)
	}

	rep := makeReport(time.Now(), m.Nodes(), red)
	if o.json {
		err = writeJSON(stdout, rep, true)
	} else {
		err = writeTable(stdout, rep, "")
	}
	if err != nil {
		fmt.Fprintf(stderr, "pgxha: %v\n", err)
		return exitError
	}
	if rep.Master == nil {
		if o.wait > 0 {
			fmt.Fprintf(stderr, "pgxha: no master (waited %s)\n", o.wait)
		} else {
			fmt.Fprintln(stderr, "pgxha: no master")
		}
		return exitNoMaster
	}
	return exitOK
}

// waitComplete waits until the Manager's view is complete (see complete) or
// ctx ends. It wakes on changes of the Manager's view through WaitReady,
// asking each time for as many replicas as there are nodes not known to be
// down.
func waitComplete(ctx context.Context, m *hasql.Manager) {
	// Each round follows a change of the view; the bound only guards
	// against a view that keeps changing until ctx ends anyway.
	for range 10000 {
		ok, replicas := complete(m.Nodes())
		if ok || m.WaitReady(ctx, 1, replicas) != nil {
			return
		}
	}
}

// watch shows the view until ctx ends. On a terminal it redraws it every
// o.interval and at once when a role changes, each frame replacing the
// last. Elsewhere (a file, a pipe) a frame follows the last, a blank line
// apart and with no escape codes, only when something a reader acts on
// changed (see changeKey): not at every interval, so a log of the output
// stays as long as the story it tells. With -json a document is printed
// every interval, for scripts that sample lag.
func watch(ctx context.Context, o options, red redactor, stdout, stderr io.Writer) int {
	m, err := connect(ctx, o, red, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "pgxha: %v\n", err)
		return exitError
	}
	defer m.Close()

	note := "every " + o.interval.String() + " and on every change, Ctrl-C to quit"
	if !o.terminal {
		note = "on every change, Ctrl-C to quit"
	}
	printed, first := "", true
	ticker := time.NewTicker(o.interval)
	defer ticker.Stop()
	for {
		changed := m.Changed()
		rep := makeReport(time.Now(), m.Nodes(), red)
		switch {
		case o.json:
			err = writeJSON(stdout, rep, false)
		case o.terminal:
			var frame bytes.Buffer
			frame.WriteString(clearScreen)
			if err = writeTable(&frame, rep, note); err == nil {
				_, err = stdout.Write(frame.Bytes())
			}
		default:
			if key := changeKey(rep); first || key != printed {
				var frame bytes.Buffer
				if !first {
					frame.WriteString("\n")
				}
				first, printed = false, key
				if err = writeTable(&frame, rep, note); err == nil {
					_, err = stdout.Write(frame.Bytes())
				}
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "pgxha: %v\n", err)
			return exitError
		}
		select {
		case <-ctx.Done():
			return exitOK
		case <-ticker.C:
		case <-changed:
		}
	}
}

// changeKey is what a frame of rep says that a reader acts on: each node's
// role (with its notes: suspect, replay paused, split brain, ...), whether
// it is up, its sync state, timeline and the cause of its error, why it is
// detached or its sync state unknown, which replica a stale master is
// behind, and which check a writable node waits for. Positions, lag and check latency, which move all the time, are
// left out.
func changeKey(rep report) string {
	var b strings.Builder
	for _, n := range rep.Nodes {
		fmt.Fprintf(&b, "%s|%s|%t|%s|%s|", n.Addr, roleText(n), n.Up, orDash(n.SyncState),
			optional(n.Timeline, func(v uint32) string { return strconv.FormatUint(uint64(v), 10) }))
		for _, p := range []*string{n.Error, n.Detached, n.SyncUnknown, n.StaleBehind, n.Waiting} {
			if p != nil {
				b.WriteString(shortError(*p))
			}
			b.WriteByte('|')
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
