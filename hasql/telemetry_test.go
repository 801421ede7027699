package hasql_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// metrics collects the reader's metrics by name.
func metrics(t *testing.T, ctx context.Context, r *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(ctx, &rm))
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

func attr(set attribute.Set, key string) string {
	v, _ := set.Value(attribute.Key(key))
	return v.Emit()
}

func sumOf(m metricdata.Metrics) int64 {
	var total int64
	if s, ok := m.Data.(metricdata.Sum[int64]); ok {
		for _, dp := range s.DataPoints {
			total += dp.Value
		}
	}
	return total
}

func TestTelemetry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"),
		hasql.WithMeterProvider(mp), hasql.WithTracerProvider(tp))
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	conn, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	conn.Release()
	conn, err = m.AcquireReplica(ctx)
	require.NoError(t, err)
	held := conn

	t.Run("roles, checks, pools", func(t *testing.T) {
		got := metrics(t, ctx, reader)
		role := got[hasql.MetricNodeRole].Data.(metricdata.Gauge[int64])
		roles := map[string]string{}
		for _, dp := range role.DataPoints {
			assert.Equal(t, int64(1), dp.Value)
			assert.Equal(t, "postgresql", attr(dp.Attributes, "db.system.name"))
			assert.Equal(t, "127.0.0.1", attr(dp.Attributes, "server.address"))
			assert.Equal(t, "postgres", attr(dp.Attributes, "db.namespace"))
			roles[attr(dp.Attributes, "hasql.node.name")] = attr(dp.Attributes, "hasql.role")
		}
		assert.Equal(t, map[string]string{"n1": "master", "n2": "sync", "n3": "async"}, roles)

		checks := got[hasql.MetricCheckDuration].Data.(metricdata.Histogram[float64])
		var count uint64
		for _, dp := range checks.DataPoints {
			count += dp.Count
			assert.Equal(t, "ok", attr(dp.Attributes, "hasql.check.result"))
		}
		assert.GreaterOrEqual(t, count, uint64(3))

		used := map[string]int64{}
		for _, dp := range got[hasql.MetricConnectionCount].Data.(metricdata.Sum[int64]).DataPoints {
			if attr(dp.Attributes, "db.client.connection.state") == "used" {
				used[attr(dp.Attributes, "db.client.connection.pool.name")] += dp.Value
			}
		}
		var total int64
		for _, v := range used {
			total += v
		}
		assert.Equal(t, int64(1), total, "the held replica connection is used: %v", used)
		assert.Contains(t, got, hasql.MetricConnectionMax)

		acq := got[hasql.MetricAcquireDuration].Data.(metricdata.Histogram[float64])
		targets := map[string]uint64{}
		for _, dp := range acq.DataPoints {
			targets[attr(dp.Attributes, "hasql.target")] += dp.Count
		}
		assert.Equal(t, uint64(1), targets["master"])
		assert.Equal(t, uint64(1), targets["replica"])
		sb := got[hasql.MetricSplitBrain].Data.(metricdata.Gauge[int64])
		require.Len(t, sb.DataPoints, 1)
		assert.Zero(t, sb.DataPoints[0].Value)
	})
	held.Release()

	t.Run("acquire spans", func(t *testing.T) {
		var found int
		for _, s := range spans.GetSpans() {
			if s.Name != hasql.SpanAcquire+" master" && s.Name != hasql.SpanAcquire+" replica" {
				continue
			}
			found++
			assert.Equal(t, trace.SpanKindClient, s.SpanKind)
			set := attribute.NewSet(s.Attributes...)
			assert.Equal(t, "postgresql", attr(set, "db.system.name"))
			assert.NotEmpty(t, attr(set, "server.port"), "the node that won")
			assert.NotEmpty(t, attr(set, "hasql.target"))
		}
		assert.Equal(t, 2, found)
	})

	t.Run("lag grows under paused replay", func(t *testing.T) {
		require.NoError(t, n3.PauseReplay(ctx))
		defer n3.ResumeReplay(ctx)
		_, err := m.Master().Exec(ctx, "CREATE TABLE big AS SELECT g FROM generate_series(1, 50000) g")
		require.NoError(t, err)
		lagOf := func() (int64, float64) {
			got := metrics(t, ctx, reader)
			var b int64
			var s float64
			for _, dp := range got[hasql.MetricLagBytes].Data.(metricdata.Gauge[int64]).DataPoints {
				if attr(dp.Attributes, "server.port") == n3.Addr()[len("127.0.0.1:"):] {
					b = dp.Value
				}
			}
			for _, dp := range got[hasql.MetricLag].Data.(metricdata.Gauge[float64]).DataPoints {
				if attr(dp.Attributes, "server.port") == n3.Addr()[len("127.0.0.1:"):] {
					s = dp.Value
				}
			}
			return b, s
		}
		var b0 int64
		var s0 float64
		require.Eventually(t, func() bool { b0, s0 = lagOf(); return b0 > 1<<20 }, 10*time.Second, 20*time.Millisecond)
		require.Eventually(t, func() bool { _, s := lagOf(); return s > s0+0.2 }, 10*time.Second, 20*time.Millisecond,
			"hasql.replication.lag grows")
	})

	t.Run("a failover counts and is traced", func(t *testing.T) {
		before := sumOf(metrics(t, ctx, reader)[hasql.MetricFailovers])
		require.NoError(t, n1.Kill())
		require.NoError(t, c.Failover(ctx, n2))
		require.Eventually(t, func() bool {
			return sumOf(metrics(t, ctx, reader)[hasql.MetricFailovers]) == before+1
		}, 10*time.Second, 10*time.Millisecond, "hasql.failovers counts the new master")
		got := metrics(t, ctx, reader)
		var toMaster int64
		for _, dp := range got[hasql.MetricRoleChanges].Data.(metricdata.Sum[int64]).DataPoints {
			if attr(dp.Attributes, "hasql.role") == "master" && fromSync(attr(dp.Attributes, "hasql.role.from")) {
				toMaster += dp.Value
			}
		}
		assert.Equal(t, int64(1), toMaster, "n2's change from sync (replica while no master was known) to master is counted")
		var event bool
		for _, s := range spans.GetSpans() {
			if s.Name != hasql.SpanRoleChange {
				continue
			}
			for _, e := range s.Events {
				set := attribute.NewSet(e.Attributes...)
				if e.Name == hasql.EventRoleChanged && attr(set, "hasql.role") == "master" && fromSync(attr(set, "hasql.role.from")) {
					event = true
				}
			}
		}
		assert.True(t, event, "a span event for the role change")

		short, cancelShort := context.WithTimeout(ctx, time.Millisecond)
		defer cancelShort()
		<-short.Done()
		_, err := m.AcquireMaster(short)
		require.Error(t, err)
		var errs int64
		for _, dp := range metrics(t, ctx, reader)[hasql.MetricAcquireErrors].Data.(metricdata.Sum[int64]).DataPoints {
			errs += dp.Value
			assert.NotEmpty(t, attr(dp.Attributes, "error.type"))
		}
		assert.Positive(t, errs)
	})
	_ = n2
}

// TestNodeNameLabelBounded: the node name, which a server or Patroni
// chooses, is a metric label: its value is printable and at most 64
// bytes, whatever name a lying Patroni reports.
func TestNodeNameLabelBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	port := closedPort(t)
	long := strings.Repeat("n", 5000) + "\x1b[2J"
	api := fakePatroni(t, false, patroniMember{Name: long, Role: "leader", State: "running", Host: "127.0.0.1", Port: port})
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/app?sslmode=disable", port))
	require.NoError(t, err)
	cfg.MeterProvider = mp
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Discoverer, err = discovery.NewPatroni(discovery.PatroniConfig{URLs: []string{api.URL}})
	require.NoError(t, err)
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	require.Eventually(t, func() bool {
		for _, n := range m.Nodes() {
			// Discovery keeps 256 bytes of a member's name.
			if n.Name != "" && strings.HasPrefix(long, n.Name) {
				return true
			}
		}
		return false
	}, time.Minute, 5*time.Millisecond, "the member's name reaches the node")
	roles, ok := metrics(t, ctx, reader)[hasql.MetricNodeRole].Data.(metricdata.Gauge[int64])
	require.True(t, ok)
	require.NotEmpty(t, roles.DataPoints)
	for _, dp := range roles.DataPoints {
		name := attr(dp.Attributes, hasql.AttrNodeName)
		assert.LessOrEqual(t, len(name), 64)
		assert.NotContains(t, name, "\x1b")
	}
}

// fromSync reports whether a role change came from the sync replica's role:
// sync, or replica once no master was known (no replica is sync then).
func fromSync(from string) bool { return from == "sync" || from == "replica" }
