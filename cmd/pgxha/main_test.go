package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is an output that run may write from several goroutines (the
// Manager's logger with -v) while the test reads it. Every Write signals
// wrote.
type syncBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{wrote: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	select {
	case b.wrote <- struct{}{}:
	default:
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the buffer's content satisfies ok, or fails the test
// when ctx ends.
func (b *syncBuffer) waitFor(t *testing.T, ctx context.Context, what string, ok func(string) bool) string {
	t.Helper()
	for {
		if s := b.String(); ok(s) {
			return s
		}
		select {
		case <-b.wrote:
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v; output so far:\n%s", what, ctx.Err(), b.String())
		}
	}
}

type result struct {
	code           int
	stdout, stderr string
}

func runCmd(ctx context.Context, args ...string) result {
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	code := run(ctx, args, stdout, stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// tableRow is one node's row of the table, by column.
type tableRow struct {
	addr, name, role, syncState, timeline, lsn, lagBytes, lagTime, check, err string
}

// parseTable reads the rows of the table in out, by address. Columns are
// separated by at least two spaces.
func parseTable(t *testing.T, out string) (header string, rows map[string]tableRow) {
	t.Helper()
	lines := strings.Split(out, "\n")
	require.GreaterOrEqual(t, len(lines), 2, out)
	header = lines[0]
	require.True(t, strings.HasPrefix(lines[1], "ADDRESS"), out)
	sep := regexp.MustCompile(`\s{2,}`)
	rows = map[string]tableRow{}
	for _, l := range lines[2:] {
		if l == "" || l == "errors:" || strings.HasPrefix(l, " ") || strings.HasPrefix(l, "system identifier ") {
			continue
		}
		f := sep.Split(l, 10)
		require.GreaterOrEqual(t, len(f), 9, "row %q", l)
		for len(f) < 10 {
			f = append(f, "")
		}
		rows[f[0]] = tableRow{f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]}
	}
	return header, rows
}

// jsonReport is the JSON form of a report as a script reads it.
type jsonReport struct {
	Time             time.Time      `json:"time"`
	Master           *string        `json:"master"`
	SystemIdentifier *string        `json:"system_identifier"`
	Summary          map[string]int `json:"summary"`
	Nodes            []struct {
		Addr                string     `json:"addr"`
		Name                *string    `json:"name"`
		Role                string     `json:"role"`
		Up                  bool       `json:"up"`
		SyncState           *string    `json:"sync_state"`
		Timeline            *int       `json:"timeline"`
		LSN                 *string    `json:"lsn"`
		LagBytes            *int64     `json:"lag_bytes"`
		LagSeconds          *float64   `json:"lag_seconds"`
		LastCheck           *time.Time `json:"last_check"`
		CheckLatencySeconds *float64   `json:"check_latency_seconds"`
		Error               *string    `json:"error"`
	} `json:"nodes"`
}

var (
	lsnPattern      = regexp.MustCompile(`^[0-9A-F]+/[0-9A-F]+$`)
	bytesPattern    = regexp.MustCompile(`^\d+(\.\d)? (B|KiB|MiB|GiB|TiB)$`)
	durationPattern = regexp.MustCompile(`^(\d+(\.\d+)?(ns|µs|ms|s)|\d+m\d\ds|\d+h\d\dm)$`)
)

// withPassword returns dsn (a URL) with its password replaced.
func withPassword(t *testing.T, dsn, password string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

// TestAgainstCluster runs every command against one real cluster: a master,
// a sync and an async replica. The last subtest kills the master.
func TestAgainstCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	dsn := c.DSN()
	nodes := c.Nodes()
	require.Len(t, nodes, 3)
	require.Len(t, c.SyncReplicas(), 1)
	master, syncAddr := nodes[0].Addr(), c.SyncReplicas()[0].Addr()
	wantRoles := map[string]string{}
	for _, n := range nodes {
		wantRoles[n.Addr()] = "async"
	}
	wantRoles[master], wantRoles[syncAddr] = "master", "sync"

	t.Run("status", func(t *testing.T) {
		t.Setenv(dsnEnv, dsn)
		r := runCmd(ctx, "status")
		require.Equal(t, exitOK, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
		assert.Empty(t, r.stderr)
		header, rows := parseTable(t, r.stdout)
		assert.Contains(t, header, "1 master, 1 sync, 1 async")
		assert.Regexp(t, `(?m)^system identifier (\d+) \(pin it: hasql_system_identifier=\d+\)$`, r.stdout)
		require.Len(t, rows, 3, r.stdout)
		for addr, want := range wantRoles {
			row := rows[addr]
			assert.Equal(t, want, row.role, "role of %s", addr)
			assert.Equal(t, "1", row.timeline)
			assert.Regexp(t, lsnPattern, row.lsn)
			assert.Regexp(t, durationPattern, row.check)
			assert.Empty(t, row.err)
			if want == "master" {
				assert.Equal(t, "-", row.lagBytes)
				assert.Equal(t, "-", row.lagTime)
			} else {
				assert.Equal(t, want, row.syncState)
				assert.Regexp(t, bytesPattern, row.lagBytes)
				assert.Regexp(t, durationPattern, row.lagTime)
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		// The DSN from the environment, the flag after it.
		t.Setenv(dsnEnv, dsn)
		r := runCmd(ctx, "status", "--json")
		require.Equal(t, exitOK, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
		var rep jsonReport
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
		require.NotNil(t, rep.Master)
		assert.Equal(t, master, *rep.Master)
		require.NotNil(t, rep.SystemIdentifier, "the system identifier to pin")
		assert.Regexp(t, `^\d+$`, *rep.SystemIdentifier)
		assert.Equal(t, map[string]int{"master": 1, "sync": 1, "async": 1, "unknown": 0, "down": 0, "quorum": 0, "replica": 0, "detached": 0, "stale": 0}, rep.Summary)
		require.Len(t, rep.Nodes, 3)
		for i, n := range rep.Nodes {
			assert.Equal(t, nodes[i].Addr(), n.Addr, "nodes in DSN order")
			assert.Equal(t, wantRoles[n.Addr], n.Role, "role of %s", n.Addr)
			assert.True(t, n.Up)
			assert.Nil(t, n.Error)
			require.NotNil(t, n.LSN)
			assert.Regexp(t, lsnPattern, *n.LSN)
			require.NotNil(t, n.CheckLatencySeconds)
			assert.Greater(t, *n.CheckLatencySeconds, 0.0)
			assert.NotNil(t, n.LastCheck)
			if n.Role == "master" {
				assert.Nil(t, n.LagBytes)
				assert.Nil(t, n.LagSeconds)
			} else {
				require.NotNil(t, n.LagBytes)
				require.NotNil(t, n.LagSeconds)
				assert.GreaterOrEqual(t, *n.LagBytes, int64(0))
				assert.GreaterOrEqual(t, *n.LagSeconds, 0.0)
				require.NotNil(t, n.SyncState)
				assert.Equal(t, n.Role, *n.SyncState)
			}
		}

		r2 := runCmd(ctx, "status", dsn, "-json", "-wait", "5s")
		require.Equal(t, exitOK, r2.code, r2.stderr)
		require.NoError(t, json.Unmarshal([]byte(r2.stdout), &rep))
	})

	t.Run("watch", func(t *testing.T) {
		// Piped, watch prints a frame only when something changed: with a
		// 20ms interval, a replica partitioned and healed gives a handful
		// of frames, each different from the one before, not one per
		// interval.
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		stdout, stderr := newSyncBuffer(), newSyncBuffer()
		done := make(chan int, 1)
		go func() { done <- run(wctx, []string{"watch", "-interval", "20ms", dsn}, stdout, stderr) }()
		stdout.waitFor(t, ctx, "the first frame", func(s string) bool { return strings.Contains(s, "\nADDRESS") })
		n3 := nodes[2]
		require.NoError(t, n3.Partition())
		healed := false
		defer func() {
			if !healed {
				n3.Heal()
			}
		}()
		lastRole := func(s string) string {
			frames := strings.Split(strings.TrimRight(s, "\n"), "\n\n")
			_, rows := parseTable(t, frames[len(frames)-1])
			return rows[n3.Addr()].role
		}
		stdout.waitFor(t, ctx, "a frame where n3 is not a healthy async replica", func(s string) bool { return lastRole(s) != "async" })
		require.NoError(t, n3.Heal())
		healed = true
		out := stdout.waitFor(t, ctx, "a frame where n3 is async again", func(s string) bool { return lastRole(s) == "async" })
		stop()
		require.Equal(t, exitOK, <-done, stderr.String())
		assert.NotContains(t, out, "\x1b", "no escape codes: the output is not a terminal")
		frames := strings.Split(strings.TrimRight(out, "\n"), "\n\n")
		t.Logf("%d frames:\n%s", len(frames), out)
		require.GreaterOrEqual(t, len(frames), 3, "first, n3 cut off, n3 back")
		var prev map[string]tableRow
		for i, f := range frames {
			header, rows := parseTable(t, f)
			assert.Contains(t, header, "on every change")
			require.Len(t, rows, 3, f)
			for addr, row := range rows {
				// What changes at every check is not what makes a frame.
				row.lsn, row.lagBytes, row.lagTime, row.check = "", "", "", ""
				rows[addr] = row
			}
			if i > 0 {
				assert.NotEqual(t, prev, rows, "frame %d says what frame %d said", i, i-1)
			}
			prev = rows
		}
		for addr, want := range wantRoles {
			assert.Equal(t, want, prev[addr].role, "the last frame: %s", addr)
		}
	})

	t.Run("watch json", func(t *testing.T) {
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		stdout, stderr := newSyncBuffer(), newSyncBuffer()
		done := make(chan int, 1)
		go func() { done <- run(wctx, []string{"watch", "-json", "-interval", "100ms", dsn}, stdout, stderr) }()
		out := stdout.waitFor(t, ctx, "two lines", func(s string) bool { return strings.Count(s, "\n") >= 2 })
		stop()
		require.Equal(t, exitOK, <-done, stderr.String())
		lines := strings.Split(out, "\n")
		var prev time.Time
		for _, l := range lines[:2] {
			var rep jsonReport
			require.NoError(t, json.Unmarshal([]byte(l), &rep), l)
			assert.Equal(t, 1, rep.Summary["master"])
			assert.True(t, rep.Time.After(prev))
			prev = rep.Time
			for _, n := range rep.Nodes {
				assert.Equal(t, wantRoles[n.Addr], n.Role)
			}
		}
	})

	t.Run("bad setting", func(t *testing.T) {
		const secret = "S3cret-Pw"
		bad := withPassword(t, dsn, secret)
		for _, tc := range []struct {
			name, dsn string
			want      []string
		}{
			{"bad duration", bad + "&hasql_check_interval=banana", []string{"hasql_check_interval", "banana"}},
			{"unknown setting", bad + "&hasql_bogus=1", []string{"hasql_bogus"}},
			{"keyword form", "host=127.0.0.1,127.0.0.2 port=1 password=" + secret + " hasql_max_lag_bytes=lots", []string{"hasql_max_lag_bytes", "lots"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, args := range [][]string{{"status", tc.dsn}, {"watch", tc.dsn}} {
					r := runCmd(ctx, args...)
					assert.Equal(t, exitError, r.code)
					assert.Empty(t, r.stdout)
					for _, w := range tc.want {
						assert.Contains(t, r.stderr, w)
					}
					assert.True(t, strings.HasPrefix(r.stderr, "pgxha: "), r.stderr)
					assert.NotContains(t, r.stderr, secret)
				}
			})
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		const secret = "Wr0ng-Pw"
		// Until every node was checked (a busy machine may take longer
		// than the wait for the first checks), within ctx.
		var r result
		var rows map[string]tableRow
		for {
			r = runCmd(ctx, "status", "-v", "-wait", "300ms", withPassword(t, dsn, secret))
			_, rows = parseTable(t, r.stdout)
			checked := 0
			for _, row := range rows {
				if row.role != "not checked" {
					checked++
				}
			}
			if checked == len(rows) || ctx.Err() != nil {
				break
			}
		}
		assert.Equal(t, exitNoMaster, r.code)
		assert.NotContains(t, r.stdout+r.stderr, secret)
		require.Len(t, rows, 3, r.stdout)
		for _, row := range rows {
			assert.Equal(t, "down", row.role)
			assert.Contains(t, row.err, "password authentication failed")
		}
		assert.Contains(t, r.stderr, "pgxha: no master")
	})

	t.Run("master killed", func(t *testing.T) {
		require.NoError(t, nodes[0].Kill())

		// The view this asserts (the master down, both replicas checked
		// since) takes as long as the checks take on a busy machine: ask
		// again until it is there, within ctx, rather than trusting -wait
		// to be long enough.
		var r result
		for {
			r = runCmd(ctx, "status", "-wait", "1s", dsn)
			if r.code != exitNoMaster || ctx.Err() != nil {
				break
			}
			if _, rows := parseTable(t, r.stdout); rows[master].role == "down" && upReplicas(rows) == 2 {
				break
			}
		}
		assert.Equal(t, exitNoMaster, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
		t.Logf("status after the master was killed:\n%s%s", r.stdout, r.stderr)
		header, rows := parseTable(t, r.stdout)
		assert.Contains(t, header, "no master")
		assert.Contains(t, header, "1 down")
		require.Len(t, rows, 3, r.stdout)
		assert.Equal(t, "down", rows[master].role)
		assert.NotEmpty(t, rows[master].err)
		assert.Equal(t, "-", rows[master].lsn)
		for addr, row := range rows {
			assert.NotContains(t, row.role, "master", "row of %s", addr)
		}
		assert.Contains(t, r.stderr, "no master")

		var rep jsonReport
		for {
			r = runCmd(ctx, "status", "-json", "-wait", "200ms", dsn)
			require.Equal(t, exitNoMaster, r.code, r.stderr)
			rep = jsonReport{}
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
			if len(rep.Nodes) == 3 && rep.Nodes[1].Up && rep.Nodes[2].Up || ctx.Err() != nil {
				break
			}
		}
		assert.Nil(t, rep.Master)
		assert.Equal(t, 0, rep.Summary["master"])
		assert.Equal(t, 1, rep.Summary["down"])
		require.Len(t, rep.Nodes, 3)
		n := rep.Nodes[0]
		assert.Equal(t, master, n.Addr)
		assert.Equal(t, "unknown", n.Role)
		assert.False(t, n.Up)
		require.NotNil(t, n.Error)
		assert.NotEmpty(t, *n.Error)
		assert.Nil(t, n.LSN)
		for _, n := range rep.Nodes[1:] {
			assert.True(t, n.Up)
			assert.NotEqual(t, "master", n.Role)
		}
	})
}

// upReplicas counts the rows of the table that show a replica.
func upReplicas(rows map[string]tableRow) int {
	n := 0
	for _, row := range rows {
		if row.role == "sync" || row.role == "async" || row.role == "quorum" || row.role == "replica" {
			n++
		}
	}
	return n
}

func TestUsageErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Setenv(dsnEnv, "")
	const secret = "Secr3t-9"
	dsn := "postgres://app:" + secret + "@h1,h2/app"
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "Usage:"},
		{"unknown command", []string{"stat"}, `unknown command "stat"`},
		{"DSN as the command", []string{dsn}, "unknown command"},
		{"no DSN", []string{"status"}, "no DSN"},
		{"no DSN for watch", []string{"watch", "-json"}, "no DSN"},
		{"two DSNs", []string{"status", dsn, dsn}, "too many arguments"},
		{"unknown flag", []string{"status", "-bogus", dsn}, "flag provided but not defined: -bogus"},
		{"bad wait", []string{"status", "-wait", dsn}, "invalid value"},
		{"negative wait", []string{"status", "-wait", "-1s", dsn}, "-wait -1s: must not be negative"},
		{"zero interval", []string{"watch", "-interval", "0", dsn}, "-interval 0s: must be positive"},
		{"interval on status", []string{"status", "-interval", "1s", dsn}, "flag provided but not defined: -interval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCmd(ctx, tc.args...)
			assert.Equal(t, exitError, r.code)
			assert.Empty(t, r.stdout)
			assert.Contains(t, r.stderr, tc.want)
			assert.NotContains(t, r.stderr, secret)
		})
	}

	for _, args := range [][]string{{"help"}, {"-h"}} {
		r := runCmd(ctx, args...)
		assert.Equal(t, exitOK, r.code)
		assert.Contains(t, r.stdout, "pgxha status")
	}
	r := runCmd(ctx, "watch", "-h")
	assert.Equal(t, exitOK, r.code)
	assert.Contains(t, r.stderr, "-interval")
}

func TestPasswordsOf(t *testing.T) {
	for _, tc := range []struct {
		dsn  string
		want []string // each must be found
	}{
		{"postgres://u:pw1@h1,h2/db", []string{"pw1"}},
		{"postgresql://u:p%40ss@h1:5432,h2:5433/db?sslmode=disable", []string{"p%40ss", "p@ss"}},
		{"postgres://u@h1/db?password=qpw&sslmode=disable", []string{"qpw"}},
		{"postgres://u:bro ken%zz@h1/db", []string{"bro ken%zz"}},
		{"host=h1,h2 user=u password=kwpw dbname=db", []string{"kwpw"}},
		{"host=h1 password = spaced dbname=db", []string{"spaced"}},
		{`host=h1 password='a b\'c' dbname=db`, []string{`a b\'c`, "a b'c"}},
	} {
		got := passwordsOf(tc.dsn)
		for _, w := range tc.want {
			assert.Contains(t, got, w, tc.dsn)
		}
		red := newRedactor(tc.dsn)
		for _, w := range tc.want {
			assert.NotContains(t, red.String("error: "+w+" and "+tc.dsn), w, tc.dsn)
		}
	}
	p := newRedactor("postgres://u:p@h1/db")
	assert.Equal(t, "invalid port at u:xxxxx@h1", p.String("invalid port at u:p@h1"), "the password as a whole value only")
	assert.Empty(t, passwordsOf("postgres://u@h1/db?application_name=a:b@c"))
	assert.Empty(t, passwordsOf("status"))
	assert.Equal(t, "unchanged", newRedactor("-json", "").String("unchanged"))
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1258291, "1.2 MiB"},
		{1<<20 - 1, "1.0 MiB"}, {5 << 30, "5.0 GiB"},
	} {
		assert.Equal(t, tc.want, humanBytes(tc.n), "%d", tc.n)
	}
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {350 * time.Microsecond, "350µs"}, {1234 * time.Microsecond, "1.2ms"},
		{35 * time.Millisecond, "35ms"}, {1250 * time.Millisecond, "1.25s"},
		{42300 * time.Millisecond, "42.3s"}, {125 * time.Second, "2m05s"},
		{3*time.Hour + 7*time.Minute, "3h07m"},
	} {
		assert.Equal(t, tc.want, humanDuration(tc.d), "%s", tc.d)
		assert.Regexp(t, durationPattern, humanDuration(tc.d))
	}
	long := "failed to connect to `user=app database=app`: 127.0.0.1:5432 (127.0.0.1): dial error: dial tcp 127.0.0.1:5432: connect: connection refused"
	assert.Equal(t, "connect: connection refused", shortError(long))
	// pgx's error for several attempts: one line each, under a first line
	// that names no cause.
	multi := "failed to connect to `user=postgres database=postgres`:\n" +
		"\t127.0.0.1:5432 (127.0.0.1): tls error: server refused TLS connection\n" +
		"\t127.0.0.1:5432 (127.0.0.1): failed SASL auth: FATAL: password authentication failed for user \"postgres\" (SQLSTATE 28P01)"
	assert.Equal(t, `FATAL: password authentication failed for user "postgres"`, shortError(multi))
	assert.Equal(t, "tls error: server refused TLS connection; connect: refused",
		shortError("failed to connect to `user=u database=d`:\n\th:1 (h): tls error: server refused TLS connection\n\th:1 (h): connect: refused"))
	one := "failed to connect to `user=postgres database=postgres`:\n\t127.0.0.1:5432 (127.0.0.1): dial error: dial tcp 127.0.0.1:5432: connect: connection refused\n" +
		"\t127.0.0.1:5432 (127.0.0.1): dial error: dial tcp 127.0.0.1:5432: connect: connection refused"
	assert.Equal(t, "connect: connection refused", shortError(one), "the same cause once")
	assert.Equal(t, "short: error", shortError("short: error"))
	assert.LessOrEqual(t, len([]rune(shortError(strings.Repeat("x", 200)))), shortErrorLen)
	assert.Equal(t, "1 master, 2 sync, 0 async", summaryText(summary{Master: 1, Sync: 2}))
	assert.Equal(t, "no master, 1 sync, 1 async, 1 down", summaryText(summary{Sync: 1, Async: 1, Down: 1}))
	assert.Equal(t, "1 master, 0 sync, 0 async, 1 replica (sync unknown), 1 detached, 1 stale master",
		summaryText(summary{Master: 1, Replica: 1, Detached: 1, Stale: 1}))
}

// A detached replica, one of unknown sync state, one whose lag is not
// known yet and a writable node not master yet are shown as such, with the
// reasons after the table.
func TestTableShowsWhatIsNotKnown(t *testing.T) {
	now := time.Now()
	nodes := []hasql.NodeStatus{
		{Addr: "h1:5432", Name: "n1", Role: hasql.RoleMaster, Up: true, LastCheck: now},
		{Addr: "h2:5432", Name: "n2", Role: hasql.RoleReplica, Up: true, LastCheck: now, SyncUnknown: "the check user may not read sync_state; grant it pg_monitor",
			LagBytes: 4096, LagAt: now},
		{Addr: "h3:5432", Name: "n3", Role: hasql.RoleDetached, Up: true, LastCheck: now, Detached: "left behind on timeline 1; the cluster is on timeline 2"},
		{Addr: "h4:5432", Name: "n4", Role: hasql.RoleStaleMaster, Up: true, Writable: true, LastCheck: now, StaleMaster: true, StaleBehind: "h2:5432"},
		{Addr: "h5:5432", Name: "n5", Role: hasql.RoleUnknown, Up: true, Writable: true, LastCheck: now,
			Waiting: "the first master waits until every node of the connection string has answered a check or failed one"},
	}
	rep := makeReport(now, nodes, redactor{})
	var b strings.Builder
	require.NoError(t, writeTable(&b, rep, ""))
	out := b.String()
	assert.Contains(t, out, "h4:5432: stale master behind replica: h2:5432")
	var js bytes.Buffer
	require.NoError(t, writeJSON(&js, rep, false))
	assert.Contains(t, js.String(), `"stale_behind":"h2:5432"`)
	assert.Contains(t, js.String(), `"stale_behind":null`)
	assert.Contains(t, out, "1 master, 0 sync, 0 async, 1 replica (sync unknown), 1 detached")
	assert.Regexp(t, `h2:5432\s+n2\s+replica\s+-\s+-\s+-\s+4.0 KiB\s+unknown`, out, "a lag not measured yet is unknown, never 0s")
	assert.Contains(t, out, "h3:5432: detached: left behind on timeline 1")
	assert.Contains(t, out, "h2:5432: sync unknown: the check user may not read sync_state")
	assert.Contains(t, out, "h5:5432: not master yet: the first master waits until every node")
	assert.Contains(t, js.String(), `"waiting":"the first master waits`)
	assert.Equal(t, 1, rep.Summary.Detached)
	// What a watch acts on changes when the wait ends.
	waited := changeKey(rep)
	nodes[4].Waiting = ""
	assert.NotEqual(t, waited, changeKey(makeReport(now, nodes, redactor{})))
}

// TestRedactKeepsWords checks that a password which is also a word of the
// output (testcluster's "pgxha", compose's "postgres") is hidden where it
// stands as a password and nowhere else: "pgxha: no master" and
// "user=postgres database=postgres" stay as they are.
func TestRedactKeepsWords(t *testing.T) {
	for _, tc := range []struct {
		dsn, text, want string
	}{
		{"postgres://postgres:pgxha@127.0.0.1:1,127.0.0.1:2/postgres", "pgxha: no master", "pgxha: no master"},
		{"postgres://postgres:pgxha@127.0.0.1:1,127.0.0.1:2/postgres",
			"cannot parse postgres://postgres:pgxha@127.0.0.1:1/postgres", "cannot parse postgres://postgres:xxxxx@127.0.0.1:1/postgres"},
		{"postgres://postgres:postgres@127.0.0.1:15432/postgres?sslmode=disable",
			"failed to connect to `user=postgres database=postgres`: password authentication failed for user \"postgres\"",
			"failed to connect to `user=postgres database=postgres`: password authentication failed for user \"postgres\""},
		{"postgres://postgres:postgres@127.0.0.1:15432/postgres", "host=h password=postgres user=postgres", "host=h password=xxxxx user=postgres"},
		{"postgres://postgres:postgres@127.0.0.1:15432/postgres", "password = 'postgres' dbname=postgres", "password = 'xxxxx' dbname=postgres"},
		{"postgres://postgres:postgres@127.0.0.1:15432/postgres", "postgres://u@h/postgres?PASSWORD=postgres&x=1", "postgres://u@h/postgres?PASSWORD=xxxxx&x=1"},
		{"host=db1 user=app password=app dbname=app", "user=app password=app", "user=app password=xxxxx"},
		// A space escaped with a backslash: as written, as pgx reads it,
		// as pgx v5.8 does.
		{`host=db1 user=app password=hunter\ twopart dbname=app`, `bad password "hunter twopart"`, `bad password "xxxxx"`},
		{`host=db1 user=app password=hunter\ twopart dbname=app`, `bad password "hunter\ twopart"`, `bad password "xxxxx"`},
		{`host=db1 user=app password=a\'b\ cc dbname=app`, `bad password "a'b\ cc"`, `bad password "xxxxx"`},
		// A password that is no word of the output goes wherever it stands.
		{"postgres://postgres:Zq9-secret@h/postgres", "the password Zq9-secret, again Zq9-secret", "the password xxxxx, again xxxxx"},
	} {
		assert.Equal(t, tc.want, newRedactor(tc.dsn).String(tc.text), "%s in %q", tc.dsn, tc.text)
	}
}

// TestDSNSources: the DSN comes from -dsn-file (a file or standard input)
// or $PGXHA_DSN, out of the process list; one given as an argument works
// with a warning that names the risk. The password shows nowhere.
func TestDSNSources(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Setenv(dsnEnv, "")
	const secret = "Secr3t-9"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every node is down, which status shows
	dsn := "postgres://app:" + secret + "@" + addr + "/app?connect_timeout=1"
	file := filepath.Join(t.TempDir(), "dsn")
	require.NoError(t, os.WriteFile(file, []byte(dsn+"\n"), 0o600))

	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		env   string
		warn  bool
	}{
		{name: "file", args: []string{"status", "-wait", "0", "-dsn-file", file}},
		{name: "standard input", args: []string{"status", "-wait", "0", "-dsn-file", "-"}, stdin: dsn + "\n"},
		{name: "environment", args: []string{"status", "-wait", "0"}, env: dsn},
		{name: "argument", args: []string{"status", "-wait", "0", dsn}, warn: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(dsnEnv, tc.env)
			stdin = strings.NewReader(tc.stdin)
			defer func() { stdin = os.Stdin }()
			r := runCmd(ctx, tc.args...)
			assert.Contains(t, r.stdout, addr, "the DSN was read:\n%s\n%s", r.stdout, r.stderr)
			assert.NotContains(t, r.stdout+r.stderr, secret)
			if tc.warn {
				assert.Contains(t, r.stderr, "process list")
			} else {
				assert.NotContains(t, r.stderr, "process list")
			}
		})
	}
	r := runCmd(ctx, "status", "-dsn-file", file, dsn)
	assert.Equal(t, exitError, r.code)
	assert.Contains(t, r.stderr, "give one of them")
	r = runCmd(ctx, "status", "-dsn-file", filepath.Join(t.TempDir(), "none"))
	assert.Equal(t, exitError, r.code)
	assert.Contains(t, r.stderr, "-dsn-file")
	r = runCmd(ctx, "-h")
	assert.Contains(t, r.stdout, "/proc/PID/cmdline")
}

// TestServerTextEscaped: a server's cluster_name and error text (and a
// Patroni member's name) reach the table and JSON with control characters
// escaped: no terminal escape sequence gets to the screen.
func TestServerTextEscaped(t *testing.T) {
	n := hasql.NodeStatus{
		Addr:      "127.0.0.1:5432",
		Name:      "n1\x1b[2J\x1b]0;owned\x07",
		SyncState: "sync\x1b[31m",
		LastCheck: time.Now(),
		LastError: errors.New("FATAL: \x1b[1;31mboom\r\n\tnext line"),
	}
	rep := makeReport(time.Now(), []hasql.NodeStatus{n}, redactor{})
	var table, js bytes.Buffer
	require.NoError(t, writeTable(&table, rep, ""))
	require.NoError(t, writeJSON(&js, rep, true))
	for _, out := range []string{table.String(), js.String()} {
		assert.NotContains(t, out, "\x1b")
		assert.NotContains(t, out, "\x07")
		assert.NotContains(t, out, "\r")
	}
	assert.Contains(t, table.String(), `n1\x1b[2J\x1b]0;owned\x07`)
}
