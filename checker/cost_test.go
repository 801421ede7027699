package checker_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgxha/pgxha/checker"
	"github.com/pgxha/pgxha/testcluster"
)

// BenchmarkServerCost measures what a statement costs the server: the CPU
// of the backend that runs it (from /proc/PID/schedstat), per run, on the
// master and on a replica, for the minimal role check (prepared SELECT
// pg_is_in_recovery()), the check as it runs in the steady state, the
// first check of a connection, a master's check that reads the
// walsenders (see sendersEvery), the check with one part left out, and a
// replica's check with its walreceiver read by a function scan (as it
// was). Each statement runs prepared on a connection of its own, in
// alternating chunks with the role check, so that both see the same
// machine; server-µs/op is the statement's, x-role its ratio to the role
// check's. Give it enough runs to be many ticks of CPU:
//
//	go test -run '^$' -bench ServerCost -benchtime 20000x ./checker/
func BenchmarkServerCost(b *testing.B) {
	ctx := context.Background()
	c := testcluster.New(b, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	without := func(s string, parts ...string) string {
		for i := 0; i < len(parts); i += 2 {
			if !strings.Contains(s, parts[i]) {
				b.Fatalf("the check has no %q", parts[i])
			}
			s = strings.Replace(s, parts[i], parts[i+1], 1)
		}
		return s
	}
	m, r := checker.MasterQuietSQL, checker.ReplicaCheckSQL
	for _, node := range []struct {
		kind       string
		n          *testcluster.Node
		statements []struct{ name, sql string }
	}{
		{"master", c.Master(), []struct{ name, sql string }{
			{"check", m},
			{"first-check", checker.CheckSQL},
			{"walsenders", checker.MasterCheckSQL},
			{"no-settings", without(m, "r.rec OR current_setting('default_transaction_read_only')::bool", "r.rec")},
		}},
		{"replica", c.Replicas()[0], []struct{ name, sql string }{
			{"check", r},
			{"first-check", checker.CheckSQL},
			{"no-walreceiver", without(r, ", pg_stat_get_wal_receiver() AS w", "", "(r.w).conninfo", "NULL::text", "CASE WHEN r.rec THEN coalesce((r.w).received_tli, CASE WHEN (r.w).pid IS NOT NULL AND (r.w).status IS NULL THEN 0 END) END", "NULL::int4")},
			{"no-settings", without(r, "r.rec OR current_setting('default_transaction_read_only')::bool", "r.rec")},
			{"walreceiver-scan", without(r, "(r.w).conninfo", "w.conninfo", "(r.w).received_tli", "w.received_tli", "(r.w).pid", "w.pid", "(r.w).status", "w.status",
				", pg_stat_get_wal_receiver() AS w) r", ") r, pg_stat_get_wal_receiver() w")},
			{"no-times", without(r, "pg_last_xact_replay_timestamp()", "NULL::timestamptz", "clock_timestamp()", "NULL::timestamptz")},
		}},
	} {
		for _, st := range node.statements {
			b.Run(node.kind+"/"+st.name, func(b *testing.B) {
				role := backend(b, ctx, node.n)
				stmt := backend(b, ctx, node.n)
				var roleCPU, stmtCPU time.Duration
				for done := 0; done < b.N; {
					n := min(1000, b.N-done)
					roleCPU += role.run(b, ctx, "SELECT pg_is_in_recovery()", n)
					stmtCPU += stmt.run(b, ctx, st.sql, n)
					done += n
				}
				b.ReportMetric(float64(stmtCPU.Microseconds())/float64(b.N), "server-µs/op")
				b.ReportMetric(float64(roleCPU.Microseconds())/float64(b.N), "role-µs/op")
				if roleCPU > 0 {
					b.ReportMetric(float64(stmtCPU)/float64(roleCPU), "x-role")
				}
			})
		}
	}
}

// args gives the check's parameter (the master's timeline is not read
// again: the steady state).
func args(sql string) []any {
	if strings.Contains(sql, "$1") {
		return []any{false}
	}
	return nil
}

type backendConn struct {
	conn *pgx.Conn
	pid  int
}

func backend(b *testing.B, ctx context.Context, n *testcluster.Node) *backendConn {
	conn, err := pgx.Connect(ctx, n.DSN())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(context.Background()) })
	var pid int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		b.Fatal(err)
	}
	return &backendConn{conn: conn, pid: pid}
}

// run runs sql n times and returns the CPU its backend used meanwhile.
func (c *backendConn) run(b *testing.B, ctx context.Context, sql string, n int) time.Duration {
	before := procCPU(b, c.pid)
	for range n {
		rows, err := c.conn.Query(ctx, sql, args(sql)...)
		if err != nil {
			b.Fatal(err)
		}
		for rows.Next() {
		}
		if err := rows.Err(); err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
	}
	return procCPU(b, c.pid) - before
}

// procCPU is the time process pid ran so far, as the scheduler counts it
// (exact, where /proc/PID/stat's times are sampled at clock ticks).
func procCPU(b *testing.B, pid int) time.Duration {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		b.Fatal(err)
	}
	ns, err := strconv.ParseInt(strings.Fields(string(s))[0], 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return time.Duration(ns)
}
