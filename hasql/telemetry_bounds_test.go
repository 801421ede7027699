//go:build linux

package hasql_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// poolRefusingServer answers check connections (application_name pgxha-check) as
// a master and refuses every other connection at startup with an
// ErrorResponse whose SQLSTATE is code(i) for the i-th refusal.
func poolRefusingServer(t *testing.T, code func(i int64) string) (string, *atomic.Int64) {
	t.Helper()
	return refusingServerWithMessage(t, code, "go away")
}

// error.type of hasql.acquire.errors and hasql.acquire.duration is a
// SQLSTATE only when shaped as one: a server choosing a new code of any
// length per connect made a new time series per failed acquire.
func TestAcquireErrorTypeIsBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	long := strings.Repeat("Z", 2000)
	types := acquireErrorTypes(t, ctx, func(i int64) string { return fmt.Sprintf("Q%05d%s", i, long) }, 20)
	maxLen := 0
	for ty := range types {
		maxLen = max(maxLen, len(ty))
	}
	t.Logf("%d error.type values, longest %d bytes", len(types), maxLen)
	assert.LessOrEqual(t, len(types), 8, "error.type takes a value per server-chosen SQLSTATE: unbounded cardinality")
	assert.LessOrEqual(t, maxLen, 64, "error.type holds a server-chosen string of any length")
}

// acquireErrorTypes makes a Manager whose only node is a
// poolRefusingServer refusing with code(i), tries acquires acquires of its
// master and returns the error.type values hasql.acquire.errors counted.
func acquireErrorTypes(t *testing.T, ctx context.Context, code func(i int64) string, acquires int) map[string]bool {
	t.Helper()
	addr, refused := poolRefusingServer(t, code)
	reader := sdkmetric.NewManualReader()
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@%s/app?sslmode=disable", addr))
	require.NoError(t, err)
	cfg.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	cfg.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewInMemoryExporter()))
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	for range acquires {
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		c, err := m.AcquireMaster(actx)
		acancel()
		if err == nil {
			c.Release()
		}
	}
	t.Logf("refused connects: %d", refused.Load())
	types := map[string]bool{}
	errs, ok := metrics(t, ctx, reader)[hasql.MetricAcquireErrors].Data.(metricdata.Sum[int64])
	require.True(t, ok)
	for _, dp := range errs.DataPoints {
		types[attr(dp.Attributes, "error.type")] = true
	}
	return types
}

// masterAnswersNoSenders is masterAnswers with no walsenders (NULL list).
func masterAnswersNoSenders(sysid uint64) sqlAnswer {
	return func(be *pgproto3.Backend, sql string) bool {
		switch {
		case strings.Contains(sql, "pg_control_system()), pg_postmaster_start_time()"):
			sendServer(be, sysid, "rogue")
		case strings.Contains(sql, "pg_stat_get_activity"):
			sendRow(be, []uint32{oidInt4, oidText, oidText}, []any{1, "x", "127.0.0.1"})
		case strings.Contains(sql, "extract(epoch FROM pg_postmaster_start_time())"):
			sendRow(be, []uint32{oidInt8}, []any{int64(1767225600000000)})
		case strings.Contains(sql, "string_agg"), strings.Contains(sql, "synchronous_standby_names"):
			sendMasterCheck(be)
		default:
			sendRow(be, []uint32{oidInt4}, []any{1})
		}
		return true
	}
}

// countingProcessor counts spans started and ended.
type countingProcessor struct{ started, ended atomic.Int64 }

func (p *countingProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) { p.started.Add(1) }
func (p *countingProcessor) OnEnd(sdktrace.ReadOnlySpan)                     { p.ended.Add(1) }
func (p *countingProcessor) Shutdown(context.Context) error                  { return nil }
func (p *countingProcessor) ForceFlush(context.Context) error                { return nil }

// A global tracer provider set after New (acquires are timed from the next
// check on): the spans acquires start meanwhile are ended.
func TestSpansEndWhenATracerIsSetAfterNew(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr, _ := poolRefusingServer(t, nil)
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@%s/app?sslmode=disable&hasql_check_interval=10m", addr))
	require.NoError(t, err)
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	c, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	c.Release()

	p := &countingProcessor{}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(p))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	defer otel.SetTracerProvider(prev)
	for range 10 {
		c, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		c.Release()
	}
	// No replica: the slow path, which starts a span.
	for range 3 {
		rctx, rcancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err := m.AcquireReplica(rctx)
		rcancel()
		require.Error(t, err)
	}
	t.Logf("spans started %d, ended %d", p.started.Load(), p.ended.Load())
	assert.Equal(t, p.started.Load(), p.ended.Load(), "acquire spans started and never ended")
}

// The node's checks pass, its pool's connects time out (connect_timeout):
// the acquire gives up while the caller's context is fine; error.type says
// "pool", not "context" (the caller's).
func TestPoolConnectTimeoutIsNotContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr, refused := poolRefusingServer(t, func(i int64) string { return "" })
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@%s/app?sslmode=disable&connect_timeout=1", addr))
	require.NoError(t, err)
	cfg.MeterProvider = mp
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = m.AcquireMaster(actx)
	acancel()
	require.Error(t, err)
	t.Logf("refused %d; caller ctx err %v; acquire error: %v", refused.Load(), actx.Err(), err)
	errs := metrics(t, ctx, reader)[hasql.MetricAcquireErrors].Data.(metricdata.Sum[int64])
	for _, dp := range errs.DataPoints {
		t.Logf("error.type=%s: %d", attr(dp.Attributes, "error.type"), dp.Value)
		assert.NotEqual(t, "context", attr(dp.Attributes, "error.type"), "the caller's context did not end: the node's pool could not connect")
	}
}

// NodeStatus.CheckLatency is how long the last check took, failed or not:
// it kept the last successful one's while the node's checks timed out.
func TestCheckLatencyOfAFailedCheck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n2 := c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "hasql_check_timeout", "800ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	require.NoError(t, n2.Partition())
	defer n2.Heal()
	var st hasql.NodeStatus
	require.Eventually(t, func() bool {
		st = statusAt(m, n2)
		return st.LastError != nil && !st.Up && strings.Contains(st.LastError.Error(), "timed out")
	}, time.Minute, 10*time.Millisecond)
	assert.GreaterOrEqual(t, st.CheckLatency, 400*time.Millisecond, "the last check ran out of time (%v)", st.LastError)
}

// TestLargeMessageWithinTheReadBound: docs/security.md: "a server in the set ...
// that answers a connection with an enormous error message costs the
// Manager a few KiB, not the message in memory, in the node's error and in
// its logs". A message of 3 MiB, under the 4 MiB read bound, is kept and
// logged whole.
func TestLargeMessageWithinTheReadBound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr, served := hugeErrorPG(t, 3<<20)
	var logged, maxRecord atomic.Int64
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logged.Add(int64(len(p)))
		if int64(len(p)) > maxRecord.Load() {
			maxRecord.Store(int64(len(p)))
		}
		return len(p), nil
	}), nil))
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@%s/app?sslmode=disable&hasql_check_interval=100ms", addr))
	require.NoError(t, err)
	cfg.Logger = logger
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	waitUntil(t, ctx, "two answers sent", func() bool { return served.Load() >= 2 })
	var lastErr string
	waitUntil(t, ctx, "the node's error", func() bool {
		for _, st := range m.Nodes() {
			if st.Addr == addr && st.LastError != nil {
				lastErr = st.LastError.Error()
				return true
			}
		}
		return false
	})
	t.Logf("node error %d bytes (%.120s...), %d KiB logged, largest log record %d KiB", len(lastErr), lastErr, logged.Load()>>10, maxRecord.Load()>>10)
	assert.Less(t, len(lastErr), 64<<10, "the server's message is the node's error")
	assert.Less(t, maxRecord.Load(), int64(64<<10), "the server's message is a log line")
}

// refusingServerWithMessage answers check connections (application_name
// pgxha-check) as a master and refuses every other connection at startup
// with an ErrorResponse of msg whose SQLSTATE is code(i) for the i-th
// refusal ("": never answers).
func refusingServerWithMessage(t *testing.T, code func(i int64) string, msg string) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var refused atomic.Int64
	var wg sync.WaitGroup
	answer := masterAnswersNoSenders(7000000000000000099)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(time.Minute))
				be := pgproto3.NewBackend(c, c)
				for range 3 {
					m, err := be.ReceiveStartupMessage()
					if err != nil {
						return
					}
					switch m := m.(type) {
					case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
						if _, err := c.Write([]byte{'N'}); err != nil {
							return
						}
						continue
					case *pgproto3.StartupMessage:
						if m.Parameters["application_name"] != "pgxha-check" && code != nil {
							i := refused.Add(1)
							if code(i) == "" { // hang: never answer
								_, _ = c.Read(make([]byte, 1))
								return
							}
							be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: code(i), Message: msg})
							_ = be.Flush()
							return
						}
						if welcome(be) != nil {
							return
						}
						if m.Parameters["application_name"] != "pgxha-check" {
							serveStartRows(be, 1, nil)
							return
						}
						serveSimple(be, answer)
						return
					default:
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String(), &refused
}

// A server refusing pool connections with an error of megabytes (under
// pgx's bound) is refused for its size before anything is made of it; one
// of 100 KiB has its fields cut at 2 KiB, saying how long they were. Either
// way the acquire error keeps pgx's types (a text bound rebuilt the chain
// without them).
func TestHugeRefusalKeepsTheErrorTypes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, size := range []int{3 << 20, 100 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			addr, _ := refusingServerWithMessage(t, func(i int64) string { return "53300" }, strings.Repeat("M", size))
			cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@%s/app?sslmode=disable", addr))
			require.NoError(t, err)
			cfg.Logger = slog.New(slog.DiscardHandler)
			m, err := hasql.NewWithConfig(ctx, cfg)
			require.NoError(t, err)
			defer m.Close()
			require.NoError(t, m.WaitReady(ctx, 1, 0))
			// The acquire gives up by itself once its tries failed; the
			// bound is for a machine too busy to let them end.
			actx, acancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = m.AcquireMaster(actx)
			acancel()
			require.Error(t, err)
			var ce *pgconn.ConnectError
			assert.True(t, errors.As(err, &ce), "pgx's *pgconn.ConnectError: %.300s", err)
			var pe *pgconn.PgError
			if size > 1<<20 {
				assert.Less(t, len(err.Error()), 16<<10, "%.300s", err)
				return
			}
			require.True(t, errors.As(err, &pe), "%.300s", err)
			assert.Less(t, len(pe.Message), 4<<10)
			assert.Contains(t, pe.Message, fmt.Sprintf("(%d bytes)", size), "the cut message says how long it was")
		})
	}
}

// An acquire whose context ends in a try after one the server refused
// (here the next connect hangs) says why the first failed: the refusal
// is what the caller acts on, and the acquire lost it (busy machines ended
// TestHugeRefusalKeepsTheErrorTypes that way).
func TestAcquireTimeoutKeepsTheRefusalBefore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr, refused := poolRefusingServer(t, func(i int64) string {
		if i == 1 {
			return "53300"
		}
		return "" // hang
	})
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@%s/app?sslmode=disable&pool_min_idle_conns=0&hasql_check_interval=50ms", addr)) // no connect but the acquire's; checks that change the view
	require.NoError(t, err)
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	actx, acancel := context.WithCancel(ctx)
	defer acancel()
	done := make(chan error, 1)
	go func() {
		_, err := m.AcquireMaster(actx)
		done <- err
	}()
	// The second connect hangs: the acquire tried again after the refusal.
	for refused.Load() < 2 {
		select {
		case err := <-done:
			// It gave up on the refusal alone, without a second try.
			var pe *pgconn.PgError
			require.True(t, errors.As(err, &pe), "%v", err)
			assert.Equal(t, "53300", pe.Code)
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
	acancel()
	err = <-done
	require.ErrorIs(t, err, context.Canceled)
	var pe *pgconn.PgError
	require.True(t, errors.As(err, &pe), "the refusal before the try the context ended: %v", err)
	assert.Equal(t, "53300", pe.Code)
}
