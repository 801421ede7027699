package hasql

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgxha/pgxha/internal/safetext"
)

const instrumentationName = "github.com/pgxha/pgxha/hasql"

// Names of the metrics the Manager records. Library-specific ones are under
// "hasql."; pool metrics follow the database semantic conventions.
const (
	MetricNodeRole         = "hasql.node.role"
	MetricCheckDuration    = "hasql.check.duration"
	MetricLagBytes         = "hasql.replication.lag.bytes"
	MetricLag              = "hasql.replication.lag"
	MetricAcquireDuration  = "hasql.acquire.duration"
	MetricAcquireErrors    = "hasql.acquire.errors"
	MetricRoleChanges      = "hasql.role.changes"
	MetricFailovers        = "hasql.failovers"
	MetricSplitBrain       = "hasql.split_brain"
	MetricNodeDamped       = "hasql.node.damped"
	MetricConnectionCount  = "db.client.connection.count"
	MetricConnectionMax    = "db.client.connection.max"
	SpanAcquire            = "hasql.acquire"
	SpanRoleChange         = "hasql.role_change"
	EventRoleChanged       = "hasql.role_changed"
	EventViewChanged       = "hasql.view_changed"
	AttrRole               = "hasql.role"
	AttrRoleFrom           = "hasql.role.from"
	AttrTarget             = "hasql.target"
	AttrCheckResult        = "hasql.check.result"
	AttrNodeName           = "hasql.node.name"
	AttrAcquireWait        = "hasql.acquire.wait"
	attrDBSystemName       = "db.system.name"
	attrServerAddress      = "server.address"
	attrServerPort         = "server.port"
	attrDBNamespace        = "db.namespace"
	attrErrorType          = "error.type"
	attrConnectionState    = "db.client.connection.state"
	attrConnectionPoolName = "db.client.connection.pool.name"
	dbSystemPostgreSQL     = "postgresql"
	checkResultOK          = "ok"
	checkResultError       = "error"
	checkResultTimeout     = "timeout"
	connectionStateIdle    = "idle"
	connectionStateUsed    = "used"
	errorTypeNoNode        = "no_node"
	errorTypeSplitBrain    = "split_brain"
	errorTypeStaleMaster   = "stale_master"
	errorTypeClosed        = "closed"
	errorTypeContext       = "context"
	errorTypePool          = "pool"
)

// defaultTracerProvider and defaultMeterProvider are the global providers
// before anyone set one: while they are in place and no provider was given,
// acquires start no span and read no clock.
var (
	defaultTracerProvider = otel.GetTracerProvider()
	defaultMeterProvider  = otel.GetMeterProvider()
)

// timed reports whether acquires should be timed: a meter or tracer
// provider is in place. A global provider set after New is seen at the next
// check of any node (refreshTimed), so an acquire does not look the global
// providers up.
func (t *telemetry) timed() bool {
	return t.explicit || t.global.Load()
}

// refreshTimed notes whether global providers other than the defaults are
// set. The check loops call it after every check.
func (t *telemetry) refreshTimed() {
	g := otel.GetMeterProvider() != defaultMeterProvider || otel.GetTracerProvider() != defaultTracerProvider
	if t.global.Load() != g {
		t.global.Store(g)
	}
}

// telemetry holds the Manager's instruments, made once.
type telemetry struct {
	m        *Manager
	tp       trace.TracerProvider // nil: the global one, looked up per acquire
	mp       metric.MeterProvider // nil: the global one
	explicit bool                 // a provider was given: always time acquires
	global   atomic.Bool          // global providers are set (refreshTimed)

	checkDuration   metric.Float64Histogram
	acquireDuration metric.Float64Histogram
	acquireErrors   metric.Int64Counter
	roleChanges     metric.Int64Counter
	failovers       metric.Int64Counter
	reg             metric.Registration

	splitBrainNow bool // guarded by m.mu

	codes sqlStates // the SQLSTATEs error.type has taken

	db           string // the database name, for db.namespace
	spanStart    []trace.SpanStartOption
	cachedTracer atomic.Pointer[cachedTracer]
}

type cachedTracer struct {
	tp     trace.TracerProvider
	tracer trace.Tracer
}

func newTelemetry(m *Manager) (*telemetry, error) {
	t := &telemetry{m: m, tp: m.cfg.TracerProvider, mp: m.cfg.MeterProvider}
	t.explicit = t.tp != nil || t.mp != nil
	t.refreshTimed()
	mp := m.cfg.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter(instrumentationName)
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	t.checkDuration, err = meter.Float64Histogram(MetricCheckDuration, metric.WithUnit("s"),
		metric.WithDescription("Duration of a node check, connecting included."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
	add(err)
	t.acquireDuration, err = meter.Float64Histogram(MetricAcquireDuration, metric.WithUnit("s"),
		metric.WithDescription("Time to acquire a connection for a target (master or replica), waiting for a node included."),
		metric.WithExplicitBucketBoundaries(0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
	add(err)
	t.acquireErrors, err = meter.Int64Counter(MetricAcquireErrors, metric.WithUnit("{error}"),
		metric.WithDescription("Acquires that returned an error, by target and error type."))
	add(err)
	t.roleChanges, err = meter.Int64Counter(MetricRoleChanges, metric.WithUnit("{change}"),
		metric.WithDescription("Changes of a node's role."))
	add(err)
	t.failovers, err = meter.Int64Counter(MetricFailovers, metric.WithUnit("{failover}"),
		metric.WithDescription("Times a node became master after another was, or after there was none."))
	add(err)
	role, err := meter.Int64ObservableGauge(MetricNodeRole, metric.WithUnit("1"),
		metric.WithDescription("1 for each node, with its current role in hasql.role (master, sync, async, quorum, replica, detached, stale, unknown)."))
	add(err)
	lagBytes, err := meter.Int64ObservableGauge(MetricLagBytes, metric.WithUnit("By"),
		metric.WithDescription("Bytes of WAL a replica has not replayed yet."))
	add(err)
	lag, err := meter.Float64ObservableGauge(MetricLag, metric.WithUnit("s"),
		metric.WithDescription("How old the newest data a replica has not replayed is."))
	add(err)
	splitBrain, err := meter.Int64ObservableGauge(MetricSplitBrain, metric.WithUnit("1"),
		metric.WithDescription("1 while more than one node is writable."))
	add(err)
	damped, err := meter.Int64ObservableGauge(MetricNodeDamped, metric.WithUnit("1"),
		metric.WithDescription("1 while a node that flapped serves no reads (see hasql_flap_count), 0 otherwise."))
	add(err)
	connCount, err := meter.Int64ObservableUpDownCounter(MetricConnectionCount, metric.WithUnit("{connection}"),
		metric.WithDescription("Connections of a node's pool, by state (idle, used)."))
	add(err)
	connMax, err := meter.Int64ObservableUpDownCounter(MetricConnectionMax, metric.WithUnit("{connection}"),
		metric.WithDescription("Maximum connections of a node's pool."))
	add(err)
	if len(errs) > 0 {
		// Instruments that failed are no-ops; the rest still work.
		otel.Handle(errors.Join(errs...))
	}

	t.db = m.cfg.PoolConfig.ConnConfig.Database
	t.spanStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}

	t.reg, err = meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		t.observe(o, role, lagBytes, lag, splitBrain, damped, connCount, connMax)
		return nil
	}, role, lagBytes, lag, splitBrain, damped, connCount, connMax)
	if err != nil {
		otel.Handle(err)
	}
	return t, nil
}

// nodeTelemetry is what a node records with, made once per node so that
// recording allocates nothing.
type nodeTelemetry struct {
	names     *nameLabels
	attrs     []attribute.KeyValue
	acquireOK [2][]metric.RecordOption // [target]
	checkOpts [3][]metric.RecordOption // [ok, error, timeout]
}

// Bounds of the node name as a metric label: a server (its cluster_name)
// or Patroni (a member's name) chooses it, and each value is a time series.
const (
	maxNameLabel    = 64 // bytes of one value
	maxNamesPerNode = 4  // distinct values of one node; more are "(other)"
)

// nameLabels gives the node name label of one node's metrics.
type nameLabels struct {
	mu   sync.Mutex
	seen []string // guarded by mu
}

// label returns name as the label value: printable, at most maxNameLabel
// bytes, and one of at most maxNamesPerNode values for this node.
func (l *nameLabels) label(name string) string {
	v := safetext.Label(name, maxNameLabel)
	l.mu.Lock()
	defer l.mu.Unlock()
	if slices.Contains(l.seen, v) {
		return v
	}
	if len(l.seen) < maxNamesPerNode {
		l.seen = append(l.seen, v)
		return v
	}
	return "(other)"
}

func (t *telemetry) forNode(nc NodeConfig) nodeTelemetry {
	nt := nodeTelemetry{names: &nameLabels{}}
	nt.attrs = []attribute.KeyValue{
		attribute.String(attrDBSystemName, dbSystemPostgreSQL),
		attribute.String(attrServerAddress, nc.Host),
		attribute.Int(attrServerPort, int(nc.Port)),
		attribute.String(attrDBNamespace, t.db),
	}
	for tg := targetMaster; tg <= targetReplica; tg++ {
		nt.acquireOK[tg] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(append(nt.attrs, attribute.String(AttrTarget, tg.String()))...))}
	}
	for i, r := range []string{checkResultOK, checkResultError, checkResultTimeout} {
		nt.checkOpts[i] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(append(nt.attrs, attribute.String(AttrCheckResult, r))...))}
	}
	return nt
}

func (t *telemetry) close() {
	if t.reg != nil {
		_ = t.reg.Unregister()
	}
}

// observe reports the gauges: roles, lag, split brain, pool statistics.
func (t *telemetry) observe(o metric.Observer, role metric.Int64ObservableGauge, lagBytes metric.Int64ObservableGauge,
	lag metric.Float64ObservableGauge, splitBrain, damped metric.Int64ObservableGauge,
	connCount, connMax metric.Int64ObservableUpDownCounter) {
	m := t.m
	m.mu.Lock()
	nodes := m.nodes
	statuses := make([]NodeStatus, len(nodes))
	for i, n := range nodes {
		statuses[i] = n.statusLocked()
	}
	sb := t.splitBrainNow
	m.mu.Unlock()
	for i, st := range statuses {
		n := nodes[i]
		attrs := n.tel.attrs
		o.ObserveInt64(role, 1, metric.WithAttributes(append(attrs[:len(attrs):len(attrs)],
			attribute.String(AttrRole, st.Role.String()), attribute.String(AttrNodeName, n.tel.names.label(st.Name)))...))
		d := int64(0)
		if st.Damped {
			d = 1
		}
		o.ObserveInt64(damped, d, metric.WithAttributes(attrs...))
		if st.Role.IsReplica() && st.LagKnown {
			o.ObserveInt64(lagBytes, st.LagBytes, metric.WithAttributes(attrs...))
			o.ObserveFloat64(lag, st.Lag.Seconds(), metric.WithAttributes(attrs...))
		}
		ps := n.pool.Stat()
		pool := attribute.String(attrConnectionPoolName, n.cfg.Addr)
		o.ObserveInt64(connCount, int64(ps.IdleConns()), metric.WithAttributes(append(attrs[:len(attrs):len(attrs)],
			pool, attribute.String(attrConnectionState, connectionStateIdle))...))
		o.ObserveInt64(connCount, int64(ps.AcquiredConns()), metric.WithAttributes(append(attrs[:len(attrs):len(attrs)],
			pool, attribute.String(attrConnectionState, connectionStateUsed))...))
		o.ObserveInt64(connMax, int64(ps.MaxConns()), metric.WithAttributes(append(attrs[:len(attrs):len(attrs)], pool)...))
	}
	v := int64(0)
	if sb {
		v = 1
	}
	o.ObserveInt64(splitBrain, v, metric.WithAttributes(attribute.String(attrDBSystemName, dbSystemPostgreSQL)))
}

// tracer returns the tracer to start acquire spans with, or nil while no
// tracer provider is in place.
func (t *telemetry) tracer() trace.Tracer {
	tp := t.tp
	if tp == nil {
		tp = otel.GetTracerProvider()
		if tp == defaultTracerProvider {
			return nil
		}
	}
	if c := t.cachedTracer.Load(); c != nil && c.tp == tp {
		return c.tracer
	}
	tr := tp.Tracer(instrumentationName)
	t.cachedTracer.Store(&cachedTracer{tp: tp, tracer: tr})
	return tr
}

// startAcquire starts an acquire span when tracing is on.
func (t *telemetry) startAcquire(ctx context.Context, tg target) (context.Context, trace.Span) {
	tr := t.tracer()
	if tr == nil {
		return ctx, nil
	}
	ctx, span := tr.Start(ctx, SpanAcquire+" "+tg.String(), t.spanStart...)
	if span.IsRecording() {
		span.SetAttributes(attribute.String(AttrTarget, tg.String()), attribute.String(attrDBSystemName, dbSystemPostgreSQL))
	}
	return ctx, span
}

// acquired records an acquire: its duration, its node or its error.
func (t *telemetry) acquired(ctx context.Context, tg target, n *node, start time.Time, span trace.Span, err error) {
	if start.IsZero() {
		if err != nil {
			t.acquireErrors.Add(ctx, 1, metric.WithAttributes(attribute.String(attrDBSystemName, dbSystemPostgreSQL),
				attribute.String(AttrTarget, tg.String()), attribute.String(attrErrorType, t.errorType(ctx, err))))
		}
		if span != nil {
			// Started by a tracer provider set since the last check, before
			// the acquire was timed: ended all the same.
			if err != nil && span.IsRecording() {
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}
		return // nothing records durations
	}
	d := time.Since(start).Seconds()
	var errType string
	if err == nil {
		t.acquireDuration.Record(ctx, d, n.tel.acquireOK[tg]...)
	} else {
		errType = t.errorType(ctx, err)
		attrs := metric.WithAttributes(attribute.String(attrDBSystemName, dbSystemPostgreSQL),
			attribute.String(AttrTarget, tg.String()), attribute.String(attrErrorType, errType))
		t.acquireDuration.Record(ctx, d, attrs)
		t.acquireErrors.Add(ctx, 1, attrs)
	}
	if span == nil {
		return
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.Float64(AttrAcquireWait, d))
		if n != nil {
			span.SetAttributes(n.tel.attrs...)
		}
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			span.SetAttributes(attribute.String(attrErrorType, errType))
		}
	}
	span.End()
}

// maxSQLStates bounds the SQLSTATEs error.type takes: a server chooses
// them, and each is a time series.
const maxSQLStates = 16

// commonSQLStates are the SQLSTATEs an acquire meets from honest servers
// (connection, authentication, resources, shutdown, read-only): always
// told apart, whatever codes a rogue server sent first.
var commonSQLStates = []string{"08000", "08001", "08003", "08004", "08006", "08P01", "25006", "28000", "28P01",
	"3D000", "53000", "53100", "53200", "53300", "53400", "55P03", "57014", "57P01", "57P02", "57P03", "57P04", "57P05"}

// sqlStates are the SQLSTATEs error.type has taken, at most maxSQLStates.
type sqlStates struct {
	mu   sync.Mutex
	seen []string
}

// errorType is errorType with a SQLSTATE past the first maxSQLStates
// distinct ones "pool".
func (t *telemetry) errorType(ctx context.Context, err error) string {
	ty := errorType(ctx, err)
	if !isSQLState(ty) || slices.Contains(commonSQLStates, ty) {
		return ty
	}
	t.codes.mu.Lock()
	defer t.codes.mu.Unlock()
	if slices.Contains(t.codes.seen, ty) {
		return ty
	}
	if len(t.codes.seen) < maxSQLStates {
		t.codes.seen = append(t.codes.seen, ty)
		return ty
	}
	return errorTypePool
}

// errorType is an acquire error's error.type: a few fixed values, or a
// SQLSTATE (five digits or capitals; anything else a server sends is
// "pool", so that no server sets the metrics' series). "context" is the
// caller's context (or the acquire's own bound) ending, not a connect that
// timed out (connect_timeout), which is "pool".
func errorType(ctx context.Context, err error) string {
	var sb *SplitBrainError
	var ce *pgconn.ConnectError
	switch {
	case errors.As(err, &sb):
		return errorTypeSplitBrain
	case errors.Is(err, ErrStaleMaster):
		return errorTypeStaleMaster
	case errors.Is(err, ErrClosed):
		return errorTypeClosed
	case errors.Is(err, ErrNoMaster), errors.Is(err, ErrNoReplica):
		return errorTypeNoNode
	case (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) &&
		(ctx.Err() != nil || !errors.As(err, &ce)):
		return errorTypeContext
	default:
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && isSQLState(pgErr.Code) {
			return pgErr.Code
		}
		return errorTypePool
	}
}

// isSQLState reports whether code is shaped as a SQLSTATE: five digits or
// capital letters.
func isSQLState(code string) bool {
	if len(code) != 5 {
		return false
	}
	for i := 0; i < len(code); i++ {
		if c := code[i]; (c < '0' || c > '9') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

// checked records a check's duration and outcome.
func (t *telemetry) checked(n *node, d time.Duration, err error) {
	i := 0
	if err != nil {
		i = 1
		if isTimeout(err) {
			i = 2
		}
	}
	t.checkDuration.Record(context.Background(), d.Seconds(), n.tel.checkOpts[i]...)
}

// roleChanged counts a role change and emits a span with an event for it.
// Caller holds m.mu.
func (t *telemetry) roleChanged(n *node, from, to Role) {
	attrs := append(n.tel.attrs[:len(n.tel.attrs):len(n.tel.attrs)],
		attribute.String(AttrRoleFrom, from.String()), attribute.String(AttrRole, to.String()))
	t.roleChanges.Add(context.Background(), 1, metric.WithAttributes(attrs...))
	if tr := t.tracer(); tr != nil {
		_, span := tr.Start(context.Background(), SpanRoleChange, trace.WithSpanKind(trace.SpanKindInternal))
		span.AddEvent(EventRoleChanged, trace.WithAttributes(attrs...))
		span.SetAttributes(attrs...)
		span.End()
	}
}

// failover counts a node becoming master. Caller holds m.mu.
func (t *telemetry) failover(n *node) {
	t.failovers.Add(context.Background(), 1, metric.WithAttributes(n.tel.attrs...))
}

// splitBrain records whether a split brain is on. Caller holds m.mu.
func (t *telemetry) splitBrain(on bool) { t.splitBrainNow = on }
