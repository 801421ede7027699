//go:build linux

package hasql_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
)

// A rogue master that refuses pool connections with a SQLSTATE that is
// shaped as one (five capitals or digits) but new at every refusal (36^5
// values to choose from) does not make a new error.type series of
// hasql.acquire.errors per failed acquire: error.type takes at most 16
// SQLSTATEs, "pool" after them.
func TestErrorTypeTakesBoundedSQLStates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	types := acquireErrorTypes(t, ctx, func(i int64) string { return fmt.Sprintf("Q%04d", i) }, 22)
	t.Logf("%d error.type values", len(types))
	assert.LessOrEqual(t, len(types), 18, "error.type takes a value per server-chosen SQLSTATE: the rogue sets the series count (22 failed acquires)")
}

// rogueNamedManager makes a Manager whose only node is a rogue that gets
// the password in clear text and answers the checks as a master whose
// cluster_name is name(pw). It returns the Manager, its logs and its
// metric reader once the rogue was checked a few times.
func rogueNamedManager(t *testing.T, ctx context.Context, secret, serverVersion string, name func(pw string) string) (*hasql.Manager, *syncBuffer, *sdkmetric.ManualReader, string) {
	t.Helper()
	var got, checked atomic.Int64
	ln := cleartextRogue(t, &got, func(be *pgproto3.Backend, pw string) {
		be.Send(&pgproto3.AuthenticationOk{})
		for k, v := range map[string]string{"server_version": serverVersion, "standard_conforming_strings": "on", "client_encoding": "UTF8",
			"DateStyle": "ISO, MDY", "integer_datetimes": "on", "TimeZone": "UTC"} {
			be.Send(&pgproto3.ParameterStatus{Name: k, Value: v})
		}
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		if be.Flush() != nil {
			return
		}
		serveSimple(be, func(be *pgproto3.Backend, sql string) bool {
			switch {
			case strings.Contains(sql, "pg_control_system()), pg_postmaster_start_time()"):
				sendServer(be, uint64(7000000000000000001), name(pw))
			case strings.Contains(sql, "string_agg"), strings.Contains(sql, "synchronous_standby_names"):
				checked.Add(1)
				sendMasterCheck(be)
			default:
				sendRow(be, []uint32{oidInt4}, []any{1})
			}
			return true
		})
	})
	logs := &syncBuffer{}
	reader := sdkmetric.NewManualReader()
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:%s@127.0.0.1:%d/app?sslmode=disable&hasql_check_interval=100ms", url.PathEscape(secret), closedPort(t)))
	require.NoError(t, err)
	require.Equal(t, secret, cfg.PoolConfig.ConnConfig.Password)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	cfg.Discoverer = newSetDiscoverer(discovery.Node{Addr: ln.Addr().String()})
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	waitUntil(t, ctx, "the rogue checked", func() bool {
		for _, st := range m.Nodes() {
			if st.Addr == ln.Addr().String() && checked.Load() > 2 && !st.LastCheck.IsZero() {
				return true
			}
		}
		return false
	})
	return m, logs, reader, ln.Addr().String()
}

// everything a rogue's echo could reach: NodeStatus, the health JSON, the
// logs and the node name metric label.
func shownOf(t *testing.T, ctx context.Context, m *hasql.Manager, logs *syncBuffer, reader *sdkmetric.ManualReader) map[string]string {
	t.Helper()
	rec := httptest.NewRecorder()
	hasql.HealthHandler(m).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	var labels []string
	if g, ok := metrics(t, ctx, reader)[hasql.MetricNodeRole].Data.(metricdata.Gauge[int64]); ok {
		for _, dp := range g.DataPoints {
			labels = append(labels, attr(dp.Attributes, hasql.AttrNodeName))
		}
	}
	return map[string]string{
		"NodeStatus":   fmt.Sprintf("%+v", m.Nodes()),
		"health JSON":  rec.Body.String(),
		"logs":         logs.String(),
		"metric label": strings.Join(labels, "\n"),
	}
}

// A password longer than the 63 bytes a walsender name keeps, echoed by a
// rogue as its cluster_name: the checker cuts the name to 63 bytes before
// pgxha clears the password out of it, and the cut no longer holds the
// whole password: no part of it (63 of its 80 bytes) may stay in
// NodeStatus.Name, the health JSON, the logs or the hasql.node.name label.
func TestLongPasswordEchoedAsClusterNameLeavesNoPart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	secret := "Kx9-" + strings.Repeat("q7Vz", 19) // 80 bytes, a generated secret
	m, logs, reader, _ := rogueNamedManager(t, ctx, secret, "16.4", func(pw string) string { return pw })
	for where, text := range shownOf(t, ctx, m, logs, reader) {
		t.Logf("%s: %.300s", where, text)
		assert.NotContains(t, text, secret[:40], "40 bytes of the password in %s", where)
	}
}

// A password of letters outside ASCII echoed as cluster_name by a server
// that says it is PostgreSQL 16: the checker writes each byte outside
// printable ASCII as \xNN (as such a master shows a walsender's name)
// before pgxha clears the password: that form of it is cleared too.
func TestNonASCIIPasswordEchoedAsClusterNameIsCleared(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	secret := "пароль€ü" // 17 bytes
	var hex strings.Builder
	for i := 0; i < len(secret); i++ {
		fmt.Fprintf(&hex, `\x%02x`, secret[i])
	}
	m, logs, reader, _ := rogueNamedManager(t, ctx, secret, "16.4", func(pw string) string { return pw })
	shown := shownOf(t, ctx, m, logs, reader)
	for where, text := range shown {
		t.Logf("%s: %.300s", where, text)
		// The first 63 bytes of the escaped form: the whole of 15 of the
		// password's 17 bytes.
		assert.NotContains(t, text, hex.String()[:60], "the password, hex-escaped, in %s", where)
	}
}

// A node whose checks pass and whose pool's connects time out
// (connect_timeout): with the password "pw" the acquire's error is pgx's
// *pgconn.ConnectError, error.type "pool", and failover.Classify calls it
// NodeDown (retry on the next master). So with the password "1", which the
// server never saw or said but which stands whole in pgx's own text
// ("127.0.0.1"): the error is no echo, and its chain is not rebuilt of
// plain texts (the address mangled "127.0.0.xxxxx", the
// *pgconn.ConnectError gone, error.type the caller's context, Permanent).
func TestShortPasswordInPgxTextKeepsTheErrorKind(t *testing.T) {
	for _, pw := range []string{"pw", "1"} {
		t.Run("password_"+pw, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			addr, _ := poolRefusingServer(t, func(i int64) string { return "" })
			reader := sdkmetric.NewManualReader()
			cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:%s@%s/app?sslmode=disable&connect_timeout=1", pw, addr))
			require.NoError(t, err)
			cfg.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			cfg.Logger = slog.New(slog.DiscardHandler)
			m, err := hasql.NewWithConfig(ctx, cfg)
			require.NoError(t, err)
			defer m.Close()
			require.NoError(t, m.WaitReady(ctx, 1, 0))
			actx, acancel := context.WithTimeout(ctx, 30*time.Second)
			_, err = m.AcquireMaster(actx)
			acancel()
			require.Error(t, err)
			t.Logf("acquire error: %v", err)
			var ce *pgconn.ConnectError
			assert.True(t, errors.As(err, &ce), "pgx's *pgconn.ConnectError is gone from the chain")
			assert.Contains(t, err.Error(), addr, "the node's address is mangled in the error")
			assert.Equal(t, failover.NodeDown, failover.Classify(err), "Classify")
			errs := metrics(t, ctx, reader)[hasql.MetricAcquireErrors].Data.(metricdata.Sum[int64])
			for _, dp := range errs.DataPoints {
				assert.Equal(t, "pool", attr(dp.Attributes, "error.type"))
			}
		})
	}
}

// historyRogue is the only host of a connection string (so its claims
// count: it is the master, on timeline 2): its checks are answered on the
// simple protocol, a pool connection's statements on the extended one, and
// the timeline history that After reads (pg_read_file) is history.
func historyRogue(t *testing.T, history string) string {
	t.Helper()
	check := func(be *pgproto3.Backend, sql string) bool {
		switch {
		case strings.Contains(sql, "pg_control_system()), pg_postmaster_start_time()"):
			sendServer(be, uint64(7000000000000000077), "rogue")
		case strings.Contains(sql, "string_agg"), strings.Contains(sql, "synchronous_standby_names"):
			sendRow(be,
				[]uint32{oidBool, oidBool, oidText, oidText, oidTimestamptz, oidBool, oidTimestamptz, oidInt8, oidTimestamptz, oidText, oidInt4, oidText, oidText},
				[]any{"f", "f", "0/3000000", nil, nil, "f", nil, 2, rogueStart, nil, nil, nil, ""})
		default:
			sendRow(be, []uint32{oidInt4}, []any{1})
		}
		return true
	}
	pool := func(sql string) extendedAnswer {
		switch {
		case strings.Contains(sql, "pg_read_file"):
			return extendedAnswer{params: []uint32{oidText}, oid: oidText, rows: 1, value: history}
		case strings.Contains(sql, "pg_postmaster_start_time"):
			return extendedAnswer{oid: oidInt8, rows: 1, value: "1767225600000000"}
		}
		return extendedAnswer{oid: oidInt8, rows: 1, value: "1"}
	}
	ln := fakePG(t, func(c net.Conn, be *pgproto3.Backend, sm *pgproto3.StartupMessage) {
		if welcome(be) != nil {
			return
		}
		if sm.Parameters["application_name"] == "pgxha-check" {
			serveSimple(be, check)
			return
		}
		serveExtended(be, pool)
	})
	return ln.Addr().String()
}

// The timeline history a server answers for After is parsed, and a line
// it cannot read is quoted in the acquire's error, cut: a server's 8 MiB
// line must not become an error of 8 MiB returned to the caller and
// recorded as the acquire span's status and exception event (the other
// texts a server sends are cut at 2 KiB, or 8 KiB for a check's).
func TestTimelineHistoryAnswerIsBoundedInErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr := historyRogue(t, strings.Repeat("A", 8<<20))
	spans := tracetest.NewInMemoryExporter()
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@%s/app?sslmode=disable&hasql_check_interval=100ms", addr))
	require.NoError(t, err)
	cfg.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	cfg.Logger = slog.New(slog.DiscardHandler)
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	actx, acancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := m.AcquireReplica(actx, hasql.After(hasql.Token{LSN: 1, Timeline: 1, SystemID: 7000000000000000077}), hasql.FallbackToMaster())
	acancel()
	if conn != nil {
		conn.Release()
	}
	require.Error(t, err)
	t.Logf("acquire error: %d bytes: %.200s", len(err.Error()), err.Error())
	assert.Less(t, len(err.Error()), 64<<10, "the acquire's error holds the server's text whole")
	longest := 0
	for _, s := range spans.GetSpans() {
		longest = max(longest, len(s.Status.Description))
		for _, e := range s.Events {
			for _, a := range e.Attributes {
				longest = max(longest, len(a.Value.Emit()))
			}
		}
	}
	t.Logf("longest span text: %d bytes", longest)
	assert.Less(t, longest, 64<<10, "a span holds the server's text whole")
}

// A rogue member of a Patroni cluster asks for the password in clear text
// (sslmode=disable, as the warning at start says it may) and advertises a
// REST API of its own (api_url). When the configured API fails, pgxha asks
// the members' APIs, the rogue's among them, which names its members with
// the password it got. A name a server gives itself (cluster_name) is
// cleared of the password, and so is a member's name that is the password:
// not in the log line "node added", NodeStatus.Name, the health JSON or
// the hasql.node.name label.
func TestPatroniMemberNamedWithTheDSNPasswordIsCleared(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const secret = "s3cr3t-Pa55word"
	var harvested atomic.Value
	harvested.Store("")
	var got atomic.Int64
	rogue := cleartextRogue(t, &got, func(be *pgproto3.Backend, pw string) { harvested.Store(pw) })
	rport := rogue.Addr().(*net.TCPAddr).Port
	rogueAPI := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"members": []patroniMember{
			{Name: harvested.Load().(string), Role: "replica", State: "running", Host: "127.0.0.1", Port: rport},
		}})
	}))
	defer rogueAPI.Close()
	var apiDown atomic.Bool
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if apiDown.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"members": []patroniMember{
			{Name: "rogue", Role: "replica", State: "running", Host: "127.0.0.1", Port: rport, APIURL: rogueAPI.URL + "/patroni"},
		}})
	}))
	defer api.Close()
	logs := &syncBuffer{}
	reader := sdkmetric.NewManualReader()
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:%s@127.0.0.1:%d/app?sslmode=disable&hasql_check_interval=100ms", url.PathEscape(secret), closedPort(t)))
	require.NoError(t, err)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	cfg.Discoverer, err = discovery.NewPatroni(discovery.PatroniConfig{URLs: []string{api.URL}, Interval: 100 * time.Millisecond})
	require.NoError(t, err)
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	waitUntil(t, ctx, "the rogue got the password", func() bool { return harvested.Load().(string) == secret })
	apiDown.Store(true)
	waitUntil(t, ctx, "the rogue's API was asked", func() bool {
		for _, st := range m.Nodes() {
			if st.Name != "rogue" && st.Name != "" {
				return true
			}
		}
		return false
	})
	for where, text := range shownOf(t, ctx, m, logs, reader) {
		t.Logf("%s: %.400s", where, text)
		assert.NotContains(t, text, secret, "the password in %s", where)
	}
}
