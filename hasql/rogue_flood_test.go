package hasql_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
)

// retainedHeap returns HeapAlloc after a GC: what is still held.
func retainedHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// floodCheckConn starts a server in the discovered set (vouched for by
// nothing) that answers pgxha's checks as a master and, before the row of
// each check, sends extra: asynchronous messages the protocol allows at any
// time (NotificationResponse, ParameterStatus), each well within the check
// connection's 4 MiB message bound. It returns once the server answered
// rounds checks, with the Manager still open, and reports how much of the
// heap stays held then.
func floodCheckConn(t *testing.T, rounds int64, extra func(be *pgproto3.Backend, round int64)) (grown uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var checks atomic.Int64
	inner := func(be *pgproto3.Backend, sql string) bool {
		switch {
		case strings.Contains(sql, "pg_control_system()), pg_postmaster_start_time()"):
			sendServer(be, 7000000000000000003, "rogue")
		case strings.Contains(sql, "string_agg"), strings.Contains(sql, "synchronous_standby_names"):
			sendMasterCheck(be)
		default:
			sendRow(be, []uint32{oidInt4}, []any{1})
		}
		return true
	}
	rogue := newQueryPG(t, func(be *pgproto3.Backend, sql string) bool {
		if strings.Contains(sql, "string_agg") || strings.Contains(sql, "synchronous_standby_names") {
			r := checks.Add(1)
			if r <= rounds {
				extra(be, r)
			}
		}
		return inner(be, sql)
	})
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/app?sslmode=disable&hasql_check_interval=30ms&hasql_check_timeout=5s", closedPort(t)))
	require.NoError(t, err)
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Discoverer = newSetDiscoverer(discovery.Node{Addr: rogue.Addr()})
	before := retainedHeap()
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	waitUntil(t, ctx, "the rogue answered every flooded check and one more", func() bool { return checks.Load() > rounds })
	after := retainedHeap()
	for _, st := range m.Nodes() {
		t.Logf("node %s role %v err %v", st.Addr, st.Role, st.LastError)
	}
	t.Logf("heap held before %d MiB, with the Manager open after %d flooded checks %d MiB (checks answered %d)",
		before>>20, rounds, after>>20, checks.Load())
	return after - min(after, before)
}

// TestCheckConnectionKeepsNoNotifications: a server in the set, vouched
// for by nothing, sends NOTIFY messages (NotificationResponse, allowed at
// any time) on pgxha's check connection: 4 of 1 MiB with each of 32
// checks, 128 MiB in all, each message far under the 4 MiB bound. A
// *pgx.Conn made with no OnNotification keeps every one in a buffer of
// its own (Conn.bufferNotifications) that only pgx.Conn's
// WaitForNotification drains, which pgxha never calls: the check
// connection drops them, and the heap does not grow at the rogue's pace.
func TestCheckConnectionKeepsNoNotifications(t *testing.T) {
	payload := strings.Repeat("n", 1<<20)
	grown := floodCheckConn(t, 32, func(be *pgproto3.Backend, _ int64) {
		for range 4 {
			be.Send(&pgproto3.NotificationResponse{PID: 1, Channel: "c", Payload: payload})
		}
	})
	assert.Less(t, grown, uint64(48<<20),
		"notifications a server nothing vouches for sent on the check connection are held: the heap grew by %d MiB and stays", grown>>20)
}

// TestCheckConnectionParametersAreBounded: the same with ParameterStatus
// messages of distinct names, which pgconn keeps in its map of the
// server's parameters (PgConn.parameterStatuses) for the connection's
// life: a connection whose server reports more than a real one does is
// ended.
func TestCheckConnectionParametersAreBounded(t *testing.T) {
	value := strings.Repeat("v", 1<<20)
	grown := floodCheckConn(t, 32, func(be *pgproto3.Backend, round int64) {
		for i := range 4 {
			be.Send(&pgproto3.ParameterStatus{Name: fmt.Sprintf("p%d_%d", round, i), Value: value})
		}
	})
	assert.Less(t, grown, uint64(48<<20),
		"parameters a server nothing vouches for reported on the check connection are held: the heap grew by %d MiB and stays", grown>>20)
}

// startRowsPG is a server whose check connections (application_name
// pgxha-check) are answered as a master, with the simple protocol, and
// whose other connections (the node's pool) get, for the start-time query
// pgxha runs in every pool connection's ValidateConnect, rows rows of a
// start time. It counts the pool connections that asked.
func startRowsPG(t *testing.T, rows int) (addr string, asked *atomic.Int64) {
	t.Helper()
	asked = new(atomic.Int64)
	ln := fakePGFor(t, time.Minute, func(_ net.Conn, be *pgproto3.Backend, m *pgproto3.StartupMessage) {
		if welcome(be) != nil {
			return
		}
		if m.Parameters["application_name"] == "pgxha-check" {
			serveSimple(be, func(be *pgproto3.Backend, sql string) bool {
				switch {
				case strings.Contains(sql, "pg_control_system()), pg_postmaster_start_time()"):
					sendServer(be, 7000000000000000004, "rogue")
				case strings.Contains(sql, "string_agg"), strings.Contains(sql, "synchronous_standby_names"):
					sendMasterCheck(be)
				default:
					sendRow(be, []uint32{oidInt4}, []any{1})
				}
				return true
			})
			return
		}
		if serveStartRows(be, rows, asked) {
			asked.Add(1) // the client read the rows and left
		}
	})
	return ln.Addr().String(), asked
}

// serveStartRows answers the extended protocol of a pool connection: the
// start-time query with rows rows of the rogue's start time (counted in
// asked, if not nil), anything else with 1. It reports, once the client
// left, whether it had sent the start-time rows.
func serveStartRows(be *pgproto3.Backend, rows int, asked *atomic.Int64) (served bool) {
	serveExtended(be, func(sql string) extendedAnswer {
		if !strings.Contains(sql, "pg_postmaster_start_time") {
			return extendedAnswer{oid: oidInt8, rows: 1, value: "1"}
		}
		return extendedAnswer{oid: oidInt8, rows: rows, value: "1767225600000000", executed: func() {
			if asked != nil {
				asked.Add(1)
			}
			served = true
		}}
	})
	return served
}

// extendedAnswer is what serveExtended answers a statement with: its
// parameters' types, one column of type oid, and rows rows of the text
// value; executed, if not nil, is called as it sends them.
type extendedAnswer struct {
	params   []uint32
	oid      uint32
	rows     int
	value    string
	executed func()
}

// serveExtended answers a pool connection's extended protocol with
// answer's results (a simple Query with 1) until the client leaves.
func serveExtended(be *pgproto3.Backend, answer func(sql string) extendedAnswer) {
	var sql string
	for {
		m, err := be.Receive()
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *pgproto3.Parse:
			sql = m.Query
			be.Send(&pgproto3.ParseComplete{})
		case *pgproto3.Bind:
			be.Send(&pgproto3.BindComplete{})
		case *pgproto3.Describe:
			a := answer(sql)
			if m.ObjectType == 'S' {
				be.Send(&pgproto3.ParameterDescription{ParameterOIDs: a.params})
			}
			size := int16(-1)
			if a.oid == oidInt8 {
				size = 8
			}
			be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("c"), DataTypeOID: a.oid, DataTypeSize: size, TypeModifier: -1}}})
		case *pgproto3.Execute:
			a := answer(sql)
			if a.executed != nil {
				a.executed()
			}
			row := &pgproto3.DataRow{Values: [][]byte{[]byte(a.value)}}
			for i := range a.rows {
				be.Send(row)
				if i%4096 == 4095 && be.Flush() != nil {
					return
				}
			}
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte(fmt.Sprintf("SELECT %d", a.rows))})
		case *pgproto3.Sync:
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if be.Flush() != nil {
				return
			}
		case *pgproto3.Query:
			sendRow(be, []uint32{oidInt4}, []any{1})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if be.Flush() != nil {
				return
			}
		case *pgproto3.Terminate:
			return
		}
	}
}

// TestStartTimeQueryReadsOneRow: every node of the set gets a pool
// connection at once (MinIdleConns is 1 by default), a node nothing
// vouches for included, and every pool connection runs pgxha's own
// start-time query in its ValidateConnect (sameServer). A discovered
// server that answers it with 2 million small rows (each message 22
// bytes, far under any message bound) must not make the Manager hold
// them (hundreds of MiB) at each connect of its pool: the answer is one
// row, and a second ends the connection.
func TestStartTimeQueryReadsOneRow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addr, asked := startRowsPG(t, 2_000_000)
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/app?sslmode=disable&hasql_check_interval=100ms", closedPort(t)))
	require.NoError(t, err)
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Discoverer = newSetDiscoverer(discovery.Node{Addr: addr})
	stop := heapPeak()
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	waitUntil(t, ctx, "a pool connection asked the rogue for its start time", func() bool { return asked.Load() >= 1 })
	// The answer's rows are read by the time the next check is reported.
	waitUntil(t, ctx, "a pool connection read the rows and left", func() bool { return asked.Load() >= 2 })
	m.Close()
	before, peak := stop()
	t.Logf("heap before %d MiB, peak %d MiB, start-time queries answered %d", before>>20, peak>>20, asked.Load())
	assert.Less(t, peak-min(peak, before), uint64(64<<20),
		"a server nothing vouches for answered a pool connection's start-time query with many small rows: the heap rose by %d MiB", (peak-min(peak, before))>>20)
}

// TestPreAuthParameterFloodIsBounded: before it authenticates, a server
// in the discovered set (vouched for by nothing; no password asked, no TLS
// needed) sends ParameterStatus messages of distinct names, each under the
// 256 KiB bound a connection reads until it is ready. pgconn keeps every
// one in its map of the server's parameters for as long as the connect
// runs: the check connection's for CheckTimeout (1 s), the pool's
// (MinIdleConns 1: made at once for every node) for its ConnectTimeout,
// max(AcquireTimeout, CheckTimeout) = 30 s by default. Here the server
// offers 512 MiB (2048 messages of 256 KiB) to each connection and then
// waits; a connection reads a few KiB from a real server before it is
// ready, and must not read much more from this one.
func TestPreAuthParameterFloodIsBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	value := strings.Repeat("v", 256<<10-64)
	var sent atomic.Int64    // the most MiB one connection was sent
	var poolCut atomic.Int64 // pool connections that left before all was sent
	ln := fakePG(t, func(c net.Conn, be *pgproto3.Backend, sm *pgproto3.StartupMessage) {
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		for i := range 2048 {
			be.Send(&pgproto3.ParameterStatus{Name: fmt.Sprintf("p%d", i), Value: value})
			if i%16 == 15 {
				if be.Flush() != nil {
					if sm.Parameters["application_name"] != "pgxha-check" {
						poolCut.Add(1)
					}
					return
				}
				for mib := int64(i+1) / 4; ; {
					cur := sent.Load()
					if cur >= mib || sent.CompareAndSwap(cur, mib) {
						break
					}
				}
			}
		}
		_, _ = c.Read(make([]byte, 1)) // until the client gives up
	})
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/app?sslmode=disable", closedPort(t)))
	require.NoError(t, err)
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Discoverer = newSetDiscoverer(discovery.Node{Addr: ln.Addr().String()})
	stop := heapPeak()
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	waitUntil(t, ctx, "a connection was sent 256 MiB, or a pool connection left", func() bool { return sent.Load() >= 256 || poolCut.Load() > 0 })
	m.Close()
	before, peak := stop()
	t.Logf("heap before %d MiB, peak %d MiB, most MiB sent to one connection %d", before>>20, peak>>20, sent.Load())
	assert.Less(t, peak-min(peak, before), uint64(128<<20),
		"a server nothing vouches for sent parameters before authenticating: the heap rose by %d MiB", (peak-min(peak, before))>>20)
}
