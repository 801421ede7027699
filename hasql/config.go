package hasql

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgxha/pgxha/balancer"
	"github.com/pgxha/pgxha/checker"
	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/internal/secrets"
)

// Defaults of the settings a connection string can carry.
const (
	DefaultCheckInterval     = 500 * time.Millisecond
	DefaultCheckTimeout      = time.Second
	DefaultFastCheckInterval = 20 * time.Millisecond
	DefaultFastCheckWindow   = 5 * time.Second
	DefaultPromotionPoll     = 10 * time.Millisecond
	DefaultAcquireTimeout    = 30 * time.Second
	DefaultFlapCount         = 5
	DefaultFlapWindow        = time.Minute
	DefaultFlapCooldown      = 5 * time.Minute
	DefaultCheckKeepAlive    = time.Second
	// FleetCheckInterval is CheckInterval in the fleet profile
	// (hasql_profile=fleet).
	FleetCheckInterval = 5 * time.Second
)

// Config configures a Manager. Make it with ParseConfig, then change fields
// as needed before NewWithConfig. A Config must not be changed after it was
// passed to NewWithConfig.
type Config struct {
	// PoolConfig is the pool configuration parsed from the connection string,
	// with every hasql_* setting, target_session_attrs and load_balance_hosts
	// removed. Its ConnConfig names every host; each node's pool gets a copy
	// naming that node alone. Hooks and pool sizes set here apply to every
	// node's pool. Unless the connection string sets pool_min_idle_conns or
	// pool_min_conns, MinIdleConns is 1: every node keeps a connection
	// ready, and a replica's stays valid when it is promoted, so the first
	// write after a failover does not wait to connect.
	//
	// Whether a host is reached with TLS is the connection string's
	// (sslmode, sslrootcert, sslcert, sslkey): a TLSConfig may be replaced
	// or changed where it gives one, but NewWithConfig refuses a host
	// given TLS that the connection string gives none, or the other way
	// round (set TLS per node with ConfigureNode).
	//
	// MaxConnLifetime and MaxConnLifetimeJitter are kept by the node
	// rather than by pgxpool, which would read the clock for them on every
	// acquire and release: after each check the node marks the
	// connections past their end, and an acquire that comes to a marked
	// connection has pgxpool destroy it (BeforeClose runs on it, open, in
	// the pool's goroutine) and takes the next (up to one check interval
	// late). One in use is never cut for its lifetime; one released past
	// its end goes back idle, marked. An idle connection past its end stays
	// open until an acquire comes to it or MaxConnIdleTime closes it (never
	// while the pool is at MinConns). PrepareConn (or the deprecated
	// BeforeAcquire) is wrapped to refuse marked connections. With a pgx
	// older than v5.13.0 (or a build that does not record its
	// dependencies' versions), or a ConnConfig with AfterNetConnect,
	// pgxpool keeps the lifetime.
	PoolConfig *pgxpool.Config

	// Nodes lists the hosts of the connection string, in order.
	Nodes []NodeConfig

	// CheckInterval is the time between two checks of a node in steady
	// state (hasql_check_interval, default 500ms). Checks fall due on
	// multiples of it since the Manager started, every node at once.
	CheckInterval time.Duration
	// CheckTimeout bounds each check of a node, connecting included
	// (hasql_check_timeout, default 1s). A check that times out makes the
	// node suspect; a second one in a row marks it down.
	CheckTimeout time.Duration
	// FastCheckInterval is the time between checks while the cluster has no
	// master or its master looks unwell (hasql_fast_check_interval, default
	// 20ms). After FastCheckWindow (hasql_fast_check_window, default 5s) the
	// interval backs off to CheckInterval.
	FastCheckInterval time.Duration
	FastCheckWindow   time.Duration
	// WaitOnSocket makes each node's check connection wait on its socket
	// between checks, so a connection closed by the server (shutdown, crash,
	// termination) triggers a check at once (hasql_wait_on_socket, default
	// true).
	WaitOnSocket bool
	// CheckKeepAlive has the kernel watch each check connection for
	// silence (hasql_check_keepalive, default 1s; 0 leaves the system's
	// settings): TCP keepalive probes after CheckKeepAlive without a byte
	// from the server, one every CheckKeepAlive after that, and, on Linux,
	// TCP_USER_TIMEOUT of three times CheckKeepAlive (CheckTimeout if
	// longer), so that unanswered probes, or bytes the server's host leaves
	// unacknowledged that long, close the connection. The server's kernel
	// answers the probes: they cost PostgreSQL nothing. A partition or a
	// dead host is then noticed within about three times CheckKeepAlive
	// (the kernel counts whole seconds) whatever CheckInterval, through
	// WaitOnSocket's read between checks. A hung server whose kernel still
	// answers is noticed by the checks only. A system that refuses the
	// settings gets a warning, once per node, and the checks alone.
	CheckKeepAlive time.Duration
	// WatchPromotion makes each replica's check connection probe the
	// replica for a promotion every PromotionPoll between checks, but only
	// while checks are fast: while there is no master, or the master is
	// suspect or its check is slow (hasql_watch_promotion, default true).
	// Each probe is one short statement that holds no snapshot; a replica
	// found out of recovery gets writes at once and a full check follows. In
	// steady state no statement runs between checks, whatever this setting.
	WatchPromotion bool
	// PromotionPoll is the time between two such probes of a replica
	// (hasql_promotion_poll, default 10ms). A longer poll costs the replicas
	// less while checks are fast and sees a promotion later by as much.
	PromotionPoll time.Duration

	// AcquireTimeout bounds an acquire whose context has no deadline (a
	// net/http request's, context.Background()), and the wait for a node
	// of a new connection of DB's *sql.DB: when no node qualifies
	// for that long, the acquire returns the usual *NoNodeError, whose
	// cause matches context.DeadlineExceeded and names this setting
	// (hasql_acquire_timeout, default 30s: long enough to ride through a
	// failover; 0: no bound). A context with a deadline of its own is
	// bounded by that alone. The bound covers waiting for a node to
	// qualify and for a connection from its pool; statements are bounded
	// by their context only.
	AcquireTimeout time.Duration

	// Balancer picks among candidate nodes (hasql_balancer, default
	// round_robin; load_balance_hosts=random means random and disable means
	// first when hasql_balancer is not given).
	Balancer balancer.Builder

	// MaxLagBytes and MaxLag are the default limits for replicas that
	// AcquireReplica may return (hasql_max_lag_bytes, hasql_max_lag; 0 means
	// no limit). The MaxLag replica option overrides them per call.
	MaxLagBytes int64
	MaxLag      time.Duration

	// MasterReadWeight lets the master serve reads among the replicas, with
	// this weight relative to a replica's 1 (hasql_master_read_weight,
	// default 0: the master serves reads only through FallbackToMaster).
	MasterReadWeight float64

	// TargetSessionAttrs is target_session_attrs from the connection string
	// (default "any"). The manager does the routing, so it is never sent: it
	// sets the default target of DB().
	TargetSessionAttrs string

	// TokenWait is how long a read with After waits for a replica that
	// replayed the token's write before the master serves it
	// (hasql_token_wait, default 100ms; 0: the master at once when no
	// replica's last check shows the write).
	TokenWait time.Duration

	// Checker inspects nodes. Default: checker.PostgreSQL().
	Checker checker.Checker

	// Logger receives role changes, nodes going down and up, and split
	// brain. Default: slog.Default(). Steady state logs nothing at Info.
	Logger *slog.Logger

	// MeterProvider and TracerProvider receive the manager's metrics and
	// spans. Default: the global providers of go.opentelemetry.io/otel.
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider

	// ConfigureNode, when set, is called once per node with a copy of
	// PoolConfig already pointing at that node, before its pool is made. An
	// error for a node of the connection string stops NewWithConfig. Nodes
	// a Discoverer reports (its first set included) get it too; an error
	// then leaves that node out (and is logged).
	ConfigureNode func(node NodeConfig, cfg *pgxpool.Config) error

	// Discoverer, when set, is where the node set comes from while the
	// Manager runs (hasql_discovery=dns|srv|patroni and their settings, or
	// WithDiscoverer): nodes it adds get a pool and a check, nodes it
	// removes are drained and closed. Nodes (the connection string's hosts)
	// are the first set until it reports one. Default: nil, the connection
	// string's hosts for the Manager's lifetime.
	Discoverer discovery.Discoverer

	// DecisionTrace, when set, receives every event the decision core
	// takes (node set, checks, promotions seen, application errors) and
	// what it decided after each, as lines of JSON (see
	// WithDecisionTrace).
	DecisionTrace io.Writer

	// Flap damping: a node that comes back up FlapCount times within
	// FlapWindow (a crash loop, a flapping link) serves no plain reads for
	// FlapCooldown (hasql_flap_count, default 5, 0 turns damping off;
	// hasql_flap_window, default 1m; hasql_flap_cooldown, default 5m). It
	// stays eligible as master: routing safety decides that. NodeStatus
	// shows it (Damped), a log line says when it starts and ends, and the
	// hasql.node.damped gauge is 1 meanwhile.
	FlapCount    int
	FlapWindow   time.Duration
	FlapCooldown time.Duration

	// SystemIdentifier pins the cluster (hasql_system_identifier, the
	// system_identifier of pg_control_system(); `pgxha status` shows it):
	// a node of any other cluster is foreign, whatever it claims. Default
	// 0: the cluster is learned from the first master that something
	// vouches for (a host of the connection string, or a master whose
	// walsender lists a vouched replica). Pin it on a network where a
	// server in the discovered set may be hostile.
	SystemIdentifier uint64

	// Zone is the caller's zone (hasql_zone): plain replica reads prefer
	// replicas whose "zone" tag has this value, and fall back to the
	// others when none qualifies. Default: "", no preference.
	Zone string

	// MaxNodes is the most nodes the node set may hold (hasql_max_nodes,
	// default discovery.DefaultMaxNodes): a discovered set with more is
	// refused whole (logged; the node set stays as it is), whatever the
	// Discoverer. The connection string's hosts are not bounded by it.
	MaxNodes int

	// TLSServerNames are the host names that discovery may report and
	// that a discovered node's certificate is then verified against
	// (hasql_tls_server_names, names and suffixes separated by commas):
	// a name, or a suffix that starts with a dot (".db.internal" allows
	// "n1.db.internal"). Any other discovered host name, and every
	// discovered address, is verified against the connection string's
	// first host name, as are the hosts of the connection string against
	// their own (with sslmode=verify-full). Default: none.
	TLSServerNames []string

	// PasswordFunc, when set, supplies the password of every connection
	// the Manager opens, pools, check connections, Listen and DB alike
	// (see PasswordFunc). A BeforeConnect hook of PoolConfig (or set by
	// ConfigureNode) runs after it for every connection too; of it, the
	// check connections take the user and password only.
	PasswordFunc PasswordFunc

	createdByParseConfig bool
	// later holds WithNodeWeight and WithReplicaName for addresses the
	// connection string does not name, for nodes a Discoverer adds.
	later map[string]nodeSetting
	// passfile is the passfile the connection string's password comes
	// from ("" when it does not), whose entry for the first host was
	// passfileFirst (see findPassfile).
	passfile, passfileFirst string
}

// NodeConfig is one host of the connection string.
type NodeConfig struct {
	// Addr is "host:port" as written in the connection string (the port
	// filled in when it was implied).
	Addr string
	Host string
	Port uint16
	// Name is the application_name the node's walreceiver uses in its
	// master's pg_stat_replication, when it is not the node's cluster_name
	// or the one in its primary_conninfo (see WithReplicaName).
	Name string
	// Weight is the node's weight for the balancer (default 1).
	Weight float64

	tls []*pgconn.FallbackConfig // the TLS variants pgconn made for this host
	// trusted: the user named this node (a host of the connection string,
	// or an address of a DNS name they gave); see Config.SystemIdentifier.
	trusted bool
	// discovered: made for a member of a discoverer's set (nodeConfigFor),
	// not for a host of the connection string.
	discovered bool
}

// settingKeys are the hasql_* keys a connection string may carry.
var settingKeys = []string{
	"hasql_acquire_timeout",
	"hasql_balancer",
	"hasql_check_interval",
	"hasql_check_timeout",
	"hasql_fast_check_interval",
	"hasql_fast_check_window",
	"hasql_flap_cooldown",
	"hasql_flap_count",
	"hasql_flap_window",
	"hasql_master_read_weight",
	"hasql_max_lag",
	"hasql_max_lag_bytes",
	"hasql_max_nodes",
	"hasql_wait_on_socket",
	"hasql_promotion_poll",
	"hasql_profile",
	"hasql_check_keepalive",
	"hasql_system_identifier",
	"hasql_watch_promotion",
	"hasql_tls_server_names",
	"hasql_zone",
	"hasql_token_wait",
}

func init() { settingKeys = append(settingKeys, discovery.SettingKeys()...) }

var targetSessionAttrs = []string{"any", "read-write", "read-only", "primary", "standby", "prefer-standby"}

// ParseConfig parses a multi-host connection string, in URL form
// (postgres://user:pass@h1:5432,h2:5433/db?...) or keyword/value form
// (host=h1,h2 port=5432,5433 ...), with libpq's rules: one port applies to
// every host, a port list must match the host list. Settings for the manager
// travel as hasql_* parameters (see the README's table) and, like
// target_session_attrs and load_balance_hosts, are never sent to the server.
// Everything else is parsed by pgxpool.ParseConfig. Errors name the setting
// and the value at fault, never the password.
func ParseConfig(connString string) (*Config, error) {
	cfg, err := parseConfig(connString)
	if err != nil {
		return nil, redact(err, connString)
	}
	return cfg, nil
}

func parseConfig(connString string) (*Config, error) {
	raw, err := rawHostsPorts(connString)
	if err != nil {
		return nil, err
	}
	poolCfg, err := parsePool(raw.connString)
	if err != nil {
		return nil, parseError(err)
	}
	cfg := &Config{
		PoolConfig:           poolCfg,
		CheckInterval:        DefaultCheckInterval,
		CheckTimeout:         DefaultCheckTimeout,
		FastCheckInterval:    DefaultFastCheckInterval,
		FastCheckWindow:      DefaultFastCheckWindow,
		WaitOnSocket:         true,
		CheckKeepAlive:       DefaultCheckKeepAlive,
		WatchPromotion:       true,
		PromotionPoll:        DefaultPromotionPoll,
		TokenWait:            DefaultTokenWait,
		AcquireTimeout:       DefaultAcquireTimeout,
		FlapCount:            DefaultFlapCount,
		FlapWindow:           DefaultFlapWindow,
		FlapCooldown:         DefaultFlapCooldown,
		Balancer:             balancer.RoundRobin(),
		TargetSessionAttrs:   "any",
		Checker:              checker.PostgreSQL(),
		MaxNodes:             discovery.DefaultMaxNodes,
		createdByParseConfig: true,
	}

	params := poolCfg.ConnConfig.RuntimeParams
	var unknown []string
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if strings.HasPrefix(k, "hasql_") && !slices.Contains(settingKeys, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("hasql: unknown setting %s; known settings: %s", strings.Join(unknown, ", "), strings.Join(settingKeys, ", "))
	}
	if err := cfg.applySettings(params); err != nil {
		return nil, err
	}
	if err := authSettings(params); err != nil {
		return nil, err
	}
	discoverySettings := map[string]string{}
	for _, k := range discovery.SettingKeys() {
		if v, ok := params[k]; ok {
			discoverySettings[k] = v
		}
	}
	for k := range params {
		if strings.HasPrefix(k, "hasql_") || k == "load_balance_hosts" {
			delete(params, k)
		}
	}
	if tsa, ok := raw.targetSessionAttrs(); ok {
		if !slices.Contains(targetSessionAttrs, tsa) {
			return nil, fmt.Errorf("hasql: target_session_attrs %q: want one of %s", tsa, strings.Join(targetSessionAttrs, ", "))
		}
		cfg.TargetSessionAttrs = tsa
	}
	// The manager routes; pgconn must not reject nodes by role itself.
	poolCfg.ConnConfig.ValidateConnect = nil
	// Keep a connection ready on every node: a replica's connections stay
	// valid when it is promoted, so the first write after a failover does
	// not wait for a new connection.
	if !raw.has("pool_min_idle_conns") && !raw.has("pool_min_conns") {
		poolCfg.MinIdleConns = 1
	}

	if cfg.Nodes, err = nodesOf(poolCfg.ConnConfig.Config, raw); err != nil {
		return nil, err
	}
	if len(discoverySettings) > 0 {
		hosts := make([]string, len(cfg.Nodes))
		for i, n := range cfg.Nodes {
			hosts[i] = n.Addr
		}
		d, err := discovery.FromSettings(discoverySettings, hosts)
		if err != nil {
			return nil, fmt.Errorf("hasql: %w", err)
		}
		if _, static := d.(*discovery.Static); !static {
			cfg.Discoverer = d
		}
	}
	if err := cfg.checkPatroniTLS(); err != nil {
		return nil, err
	}
	cfg.findPassfile(raw)
	return cfg, nil
}

// applySettings reads hasql_* and load_balance_hosts from params.
func (cfg *Config) applySettings(params map[string]string) error {
	// A profile sets defaults; the settings it names, given too, win.
	if v, ok := params["hasql_profile"]; ok {
		switch v {
		case "default":
		case "fleet":
			cfg.CheckInterval = FleetCheckInterval
		default:
			return fmt.Errorf("hasql: hasql_profile %q: want default or fleet", v)
		}
	}
	if v, ok := params["hasql_check_keepalive"]; ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("hasql: hasql_check_keepalive %q: want a duration such as 1s, or 0 to leave the system's keepalive settings", v)
		}
		if d != 0 && (d < time.Second || d > maxKeepAlive) {
			return fmt.Errorf("hasql: hasql_check_keepalive %q: must be 0, or from 1s (the kernel counts keepalive times in seconds) to %s", v, maxKeepAlive)
		}
		cfg.CheckKeepAlive = d
	}
	durations := []struct {
		key string
		dst *time.Duration
		min time.Duration
	}{
		{"hasql_check_interval", &cfg.CheckInterval, time.Millisecond},
		{"hasql_check_timeout", &cfg.CheckTimeout, time.Millisecond},
		{"hasql_fast_check_interval", &cfg.FastCheckInterval, time.Millisecond},
		{"hasql_fast_check_window", &cfg.FastCheckWindow, 0},
		{"hasql_max_lag", &cfg.MaxLag, 0},
		{"hasql_promotion_poll", &cfg.PromotionPoll, time.Millisecond},
		{"hasql_token_wait", &cfg.TokenWait, 0},
		{"hasql_acquire_timeout", &cfg.AcquireTimeout, 0},
		{"hasql_flap_window", &cfg.FlapWindow, time.Millisecond},
		{"hasql_flap_cooldown", &cfg.FlapCooldown, time.Millisecond},
	}
	for _, d := range durations {
		v, ok := params[d.key]
		if !ok {
			continue
		}
		parsed, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("hasql: %s %q: want a duration such as 500ms or 2s", d.key, v)
		}
		if parsed < d.min {
			return fmt.Errorf("hasql: %s %q: must be at least %s", d.key, v, d.min)
		}
		*d.dst = parsed
	}
	if v, ok := params["hasql_max_lag_bytes"]; ok {
		n, err := parseBytes(v)
		if err != nil {
			return fmt.Errorf("hasql: hasql_max_lag_bytes %q: %w", v, err)
		}
		cfg.MaxLagBytes = n
	}
	if v, ok := params["hasql_flap_count"]; ok {
		k, err := strconv.Atoi(v)
		if err != nil || k < 0 || k > 1000 {
			return fmt.Errorf("hasql: hasql_flap_count %q: want a whole number from 0 (no damping) to 1000", v)
		}
		cfg.FlapCount = k
	}
	if v, ok := params["hasql_system_identifier"]; ok {
		id, err := strconv.ParseUint(v, 10, 64)
		if err != nil || id == 0 {
			return fmt.Errorf("hasql: hasql_system_identifier %q: want the cluster's system identifier, a positive decimal number (SELECT system_identifier FROM pg_control_system())", v)
		}
		cfg.SystemIdentifier = id
	}
	if v, ok := params["hasql_master_read_weight"]; ok {
		w, err := strconv.ParseFloat(v, 64)
		if err != nil || w < 0 || math.IsNaN(w) || math.IsInf(w, 0) {
			return fmt.Errorf("hasql: hasql_master_read_weight %q: want a number >= 0", v)
		}
		cfg.MasterReadWeight = w
	}
	if v, ok := params["hasql_wait_on_socket"]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("hasql: hasql_wait_on_socket %q: want true or false", v)
		}
		cfg.WaitOnSocket = b
	}
	if v, ok := params["hasql_watch_promotion"]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("hasql: hasql_watch_promotion %q: want true or false", v)
		}
		cfg.WatchPromotion = b
	}
	if v, ok := params["hasql_max_nodes"]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			return fmt.Errorf("hasql: hasql_max_nodes %q: want a number of nodes, 1 or more", v)
		}
		cfg.MaxNodes = n
	}
	if v, ok := params["hasql_tls_server_names"]; ok {
		names, err := parseServerNames(v)
		if err != nil {
			return err
		}
		cfg.TLSServerNames = names
	}
	if v, ok := params["hasql_zone"]; ok {
		cfg.Zone = v
	}
	if v, ok := params["load_balance_hosts"]; ok {
		switch v {
		case "disable":
			cfg.Balancer = balancer.First()
		case "random":
			cfg.Balancer = balancer.Random()
		default:
			return fmt.Errorf("hasql: load_balance_hosts %q: want disable or random", v)
		}
	}
	if v, ok := params["hasql_balancer"]; ok {
		b, err := balancer.ByName(v)
		if err != nil {
			return fmt.Errorf("hasql: hasql_balancer: %w", err)
		}
		cfg.Balancer = b
	}
	return nil
}

// parseBytes reads a byte count: a plain number, or with a kB, MB, GB or TB
// suffix (powers of 1024, as in postgresql.conf).
func parseBytes(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"TB", 1 << 40}} {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, errors.New("want a byte count such as 1048576 or 16MB")
	}
	return n * mult, nil
}

// rawSettings is what ParseConfig reads of the connection string itself, to
// check what pgconn's parser does not: empty hosts and port lists that do
// not match the host list.
type rawSettings struct {
	connString string // possibly with implied ports made explicit
	url        *url.URL
	keyword    bool
}

func (r rawSettings) targetSessionAttrs() (string, bool) {
	if r.url != nil {
		if v, ok := r.url.Query()["target_session_attrs"]; ok {
			return v[0], true
		}
	} else if v, ok := connInfoLookup(r.connString, "target_session_attrs"); ok {
		return v, true
	}
	if v := os.Getenv("PGTARGETSESSIONATTRS"); v != "" {
		return v, true
	}
	return "", false
}

// has reports whether the connection string sets key.
func (r rawSettings) has(key string) bool {
	_, ok := r.lookup(key)
	return ok
}

// lookup returns the value the connection string gives key.
func (r rawSettings) lookup(key string) (string, bool) {
	if r.url != nil {
		q := r.url.Query()
		return q.Get(key), q.Has(key)
	}
	return connInfoLookup(r.connString, key)
}

func connInfoLookup(s, key string) (string, bool) {
	v := checker.ConnInfoValue(s, key)
	if v != "" {
		return v, true
	}
	// Distinguish "key=''" from absent.
	return "", strings.Contains(s, key+"=") || strings.Contains(s, key+" =")
}

func rawHostsPorts(connString string) (rawSettings, error) {
	r := rawSettings{connString: connString}
	var hosts, ports []string
	if isURL(connString) {
		// Hosts as libpq reads them (IPv6 literals, percent-encoded socket
		// directories), moved to the query, where pgconn and net/url read
		// them as libpq does.
		lu, err := splitLibpqURL(connString)
		if err != nil {
			return r, err
		}
		r.connString = lu.queryForm()
		u, err := url.Parse(r.connString)
		if err != nil {
			return r, fmt.Errorf("hasql: connection string is not a valid URL: %w", urlErrorOnly(err))
		}
		r.url = u
		q := u.Query()
		if q.Has("host") {
			hosts = strings.Split(q.Get("host"), ",")
		}
		if q.Has("port") {
			ports = strings.Split(q.Get("port"), ",")
		}
	} else {
		r.keyword = true
		if v, ok := connInfoLookup(connString, "host"); ok {
			hosts = strings.Split(v, ",")
		}
		if v, ok := connInfoLookup(connString, "port"); ok {
			ports = strings.Split(v, ",")
		}
	}
	if hosts == nil {
		if v := os.Getenv("PGHOST"); v != "" {
			hosts = strings.Split(v, ",")
		}
	}
	if ports == nil {
		if v := os.Getenv("PGPORT"); v != "" {
			ports = strings.Split(v, ",")
		}
	}
	for i, h := range hosts {
		if strings.TrimSpace(h) == "" && len(hosts) > 1 {
			return r, fmt.Errorf("hasql: empty host at position %d of host list %q", i+1, strings.Join(hosts, ","))
		}
	}
	if len(hosts) > 0 && len(ports) > 1 && len(ports) != len(hosts) {
		return r, fmt.Errorf("hasql: port list %q has %d entries for %d hosts %q: give one port for all hosts or one per host",
			strings.Join(ports, ","), len(ports), len(hosts), strings.Join(hosts, ","))
	}
	for i, p := range ports {
		if p == "" && len(ports) > 1 {
			return r, fmt.Errorf("hasql: empty port at position %d of port list %q", i+1, strings.Join(ports, ","))
		}
	}
	return r, nil
}

// parsePool is pgxpool.ParseConfig, with a panic of its parser (pgconn's
// keyword/value parser panics on a quoted value that ends with a backslash)
// turned into an error.
func parsePool(connString string) (cfg *pgxpool.Config, err error) {
	defer func() {
		if r := recover(); r != nil {
			cfg, err = nil, errors.New("hasql: cannot parse connection string: malformed keyword/value string (check quotes and backslashes)")
		}
	}()
	return pgxpool.ParseConfig(connString)
}

// parseError rewords an error of pgxpool.ParseConfig without the
// connection string pgconn quotes in it: its redaction of the password is a
// best effort that misses unusual spellings.
func parseError(err error) error {
	var pce *pgconn.ParseConfigError
	if !errors.As(err, &pce) {
		return fmt.Errorf("hasql: %w", err)
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, "`: "); i >= 0 {
		msg = msg[i+3:]
	}
	return &configError{msg: "hasql: cannot parse connection string: " + msg, err: pce}
}

// configError carries a ParseConfigError under a message of its own.
type configError struct {
	msg string
	err error
}

func (e *configError) Error() string { return e.msg }
func (e *configError) Unwrap() error { return errors.Unwrap(e.err) }

// urlErrorOnly drops the URL from a *url.Error: it holds the password.
func urlErrorOnly(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// nodesOf groups pgconn's host list (one entry per host and TLS variant)
// into nodes.
func nodesOf(cc pgconn.Config, raw rawSettings) ([]NodeConfig, error) {
	all := append([]*pgconn.FallbackConfig{{Host: cc.Host, Port: cc.Port, TLSConfig: cc.TLSConfig}}, cc.Fallbacks...)
	var nodes []NodeConfig
	for _, fb := range all {
		if fb.Host == "" {
			return nil, errors.New("hasql: empty host in the connection string")
		}
		addr := net.JoinHostPort(fb.Host, strconv.Itoa(int(fb.Port)))
		if strings.HasPrefix(fb.Host, "/") {
			addr = fb.Host + ":" + strconv.Itoa(int(fb.Port))
		}
		// pgconn lists each host once per TLS variant (sslmode prefer: TLS
		// then plain; allow: plain then TLS): a second entry of the same
		// address with the other variant belongs to the same host.
		if n := len(nodes); n > 0 && nodes[n-1].Addr == addr && len(nodes[n-1].tls) == 1 &&
			(nodes[n-1].tls[0].TLSConfig == nil) != (fb.TLSConfig == nil) {
			nodes[n-1].tls = append(nodes[n-1].tls, fb)
			continue
		}
		for _, prev := range nodes {
			if prev.Addr == addr {
				return nil, fmt.Errorf("hasql: host %s is listed twice", addr)
			}
		}
		nodes = append(nodes, NodeConfig{Addr: addr, Host: fb.Host, Port: fb.Port, Weight: 1, tls: []*pgconn.FallbackConfig{fb}, trusted: true})
	}
	return nodes, nil
}

// Copy returns a deep copy of cfg (pool configuration included), safe to
// change.
func (cfg *Config) Copy() *Config {
	c := *cfg
	c.PoolConfig = cfg.PoolConfig.Copy()
	c.Nodes = slices.Clone(cfg.Nodes)
	c.TLSServerNames = slices.Clone(cfg.TLSServerNames)
	c.later = maps.Clone(cfg.later)
	for i := range c.Nodes {
		c.Nodes[i].tls = slices.Clone(c.Nodes[i].tls)
	}
	return &c
}

// validate checks a Config before a Manager is made of it.
func (cfg *Config) validate() error {
	if cfg == nil {
		return errors.New("hasql: nil Config")
	}
	if !cfg.createdByParseConfig {
		return errors.New("hasql: config must be created by ParseConfig")
	}
	if len(cfg.Nodes) == 0 {
		return errors.New("hasql: no host in the connection string")
	}
	for name, d := range map[string]time.Duration{
		"CheckInterval": cfg.CheckInterval, "CheckTimeout": cfg.CheckTimeout, "FastCheckInterval": cfg.FastCheckInterval,
		"PromotionPoll": cfg.PromotionPoll,
	} {
		if d <= 0 {
			return fmt.Errorf("hasql: %s %s: must be positive", name, d)
		}
	}
	if cfg.FastCheckWindow < 0 || cfg.MaxLag < 0 || cfg.MaxLagBytes < 0 || cfg.TokenWait < 0 || cfg.AcquireTimeout < 0 {
		return errors.New("hasql: FastCheckWindow, MaxLag, MaxLagBytes, TokenWait and AcquireTimeout must not be negative")
	}
	if cfg.CheckKeepAlive < 0 || cfg.CheckKeepAlive > 0 && (cfg.CheckKeepAlive < time.Second || cfg.CheckKeepAlive > maxKeepAlive) {
		return fmt.Errorf("hasql: CheckKeepAlive %s: want 0, or from 1s to %s", cfg.CheckKeepAlive, maxKeepAlive)
	}
	if cfg.FlapCount < 0 || cfg.FlapCount > 0 && (cfg.FlapWindow <= 0 || cfg.FlapCooldown <= 0) {
		return fmt.Errorf("hasql: FlapCount %d, FlapWindow %s, FlapCooldown %s: want a count >= 0 and, with a count, a positive window and cool-down",
			cfg.FlapCount, cfg.FlapWindow, cfg.FlapCooldown)
	}
	if cfg.MasterReadWeight < 0 || math.IsNaN(cfg.MasterReadWeight) || math.IsInf(cfg.MasterReadWeight, 0) {
		return fmt.Errorf("hasql: MasterReadWeight %v: want a number >= 0", cfg.MasterReadWeight)
	}
	for _, n := range cfg.Nodes {
		if !(n.Weight > 0) || math.IsInf(n.Weight, 0) {
			return fmt.Errorf("hasql: node %s: weight %v: want a number > 0", n.Addr, n.Weight)
		}
		if len(n.tls) == 0 {
			return fmt.Errorf("hasql: node %s: not made by ParseConfig: name hosts in the connection string, or find them with a Discoverer", n.Addr)
		}
	}
	if err := cfg.checkTLSUnchanged(); err != nil {
		return err
	}
	if err := authSettings(cfg.PoolConfig.ConnConfig.RuntimeParams); err != nil {
		return err
	}
	if err := cfg.checkPatroniTLS(); err != nil {
		return err
	}
	if cfg.Discoverer == nil && len(cfg.later) > 0 {
		addrs := slices.Sorted(maps.Keys(cfg.later))
		return fmt.Errorf("hasql: WithNodeWeight or WithReplicaName: no host %s in the connection string (hosts: %s), and no Discoverer to find it", strings.Join(addrs, ", "), addrList(cfg.Nodes))
	}
	if cfg.Balancer == nil || cfg.Checker == nil {
		return errors.New("hasql: Balancer and Checker must be set")
	}
	return nil
}

// nodePoolConfig makes the pool configuration of one node.
func (cfg *Config) nodePoolConfig(n NodeConfig) (*pgxpool.Config, error) {
	pc := cfg.PoolConfig.Copy()
	cc := &pc.ConnConfig.Config
	variants := nodeTLS(pc, n, cfg.templateNode())
	cc.Host, cc.Port, cc.TLSConfig = variants[0].Host, variants[0].Port, variants[0].TLSConfig
	cc.Fallbacks = variants[1:]
	cc.ValidateConnect = nil
	if cfg.ConfigureNode != nil {
		if err := cfg.ConfigureNode(n, pc); err != nil {
			return nil, fmt.Errorf("hasql: ConfigureNode %s: %w", n.Addr, err)
		}
	}
	return pc, nil
}

// redact removes the password of connString from err's text, whatever
// produced it, and from the text of every error in its chain (see
// redactedError).
func redact(err error, connString string) error {
	return &redactedError{msg: Redact(connString, err.Error()), err: err, connString: connString}
}

// Redact returns text with the password of connString, and anything that
// looks like a password in a connection string (password=..., the user
// information of a URL up to its last '@'), replaced by xxxxx. The
// password is replaced, as written, decoded and percent-encoded, where it
// stands as a whole value, not inside another word (a password "p" leaves
// "invalid port" alone). Use it on anything derived from a connection
// string before it is shown or logged.
func Redact(connString, text string) string {
	clean := passwordKV.ReplaceAllString(text, "password=xxxxx")
	clean = redactURLPasswords(clean)
	for _, pw := range passwordsOf(connString) {
		clean = secrets.ReplaceWhole(clean, pw, "xxxxx")
	}
	return clean
}

// passwordKV matches password=value in a text: a value quoted, or one
// that runs to the first space no backslash escapes.
var passwordKV = regexp.MustCompile(`password\s*=\s*('(?:[^'\\]|\\.)*'?|(?:\\.|\S)*)`)

// redactURLPasswords replaces the password of every URL in text: after
// "://" and the user, everything up to the last '@' (of the part before
// the query, when that has one), since a password may hold '/', '?', '#'
// and '@' unencoded.
func redactURLPasswords(text string) string {
	var b strings.Builder
	rest := text
	for {
		i := strings.Index(rest, "://")
		if i < 0 {
			b.WriteString(rest)
			return b.String()
		}
		b.WriteString(rest[:i+3])
		rest = rest[i+3:]
		end := strings.IndexAny(rest, " \t\r\n\"'`")
		if end < 0 {
			end = len(rest)
		}
		if e := spacedUserEnd(rest, end); e > end {
			end = e
		}
		tok := rest[:end]
		scope := tok
		if q := strings.IndexByte(tok, '?'); q >= 0 && strings.Contains(tok[:q], "@") {
			scope = tok[:q]
		}
		at := strings.LastIndexByte(scope, '@')
		colon := strings.IndexByte(tok, ':')
		if at < 0 || colon < 0 || colon > at || strings.ContainsAny(tok[:colon], "/@") {
			continue
		}
		b.WriteString(tok[:colon+1])
		b.WriteString("xxxxx")
		rest = rest[at:]
	}
}

// hostPort matches a URL's host and port with nothing after them
// ("h2:5432", "[::1]:5432"): a first word that is one is no user:password.
var hostPort = regexp.MustCompile(`^(\[[^\]]*\]|[^:/@\[\]]*):[0-9]+$`)

// hostAfterAt matches what may follow a URL's user information: a host,
// then a port, a path, a query, a quote, a space or the end.
var hostAfterAt = regexp.MustCompile(`^@[A-Za-z0-9.\-_\[\]:%]+($|[/?#"'` + "`" + ` \t\r\n])`)

// spacedUserEnd returns where a URL's text ends when its password holds a
// space ("u:pa ss@h", which a parse error may quote): rest follows "://",
// its first word (rest[:end]) has a ':' and no '@'. The user information
// then runs to an '@' before the line's end or a closing quote, when what
// comes before that '@' can be one (no other URL in it, no "word: " of a
// message, a first word that is not host:port) and a host follows it. It
// returns end when there is no such '@'.
func spacedUserEnd(rest string, end int) int {
	first := rest[:end]
	if strings.Contains(first, "@") || !strings.Contains(first, ":") || hostPort.MatchString(first) {
		return end
	}
	q := strings.IndexAny(rest, "\r\n\"'`")
	if q < 0 {
		q = len(rest)
	}
	at := strings.IndexByte(rest[end:q], '@')
	if at < 0 {
		return end
	}
	user := rest[:end+at]
	if strings.Contains(user, "://") || strings.Contains(user[strings.IndexByte(user, ':')+1:], ": ") || !hostAfterAt.MatchString(rest[end+at:]) {
		return end
	}
	return q
}

// redactedError is an error whose text, and the text of every error it
// unwraps to, is redacted: tools that walk the chain (loggers, error
// reporters) find no password. errors.Is sees the original chain;
// errors.As sees the redacted one only.
type redactedError struct {
	msg        string
	err        error
	connString string
}

func (e *redactedError) Error() string { return e.msg }

func (e *redactedError) Unwrap() error {
	inner := errors.Unwrap(e.err)
	if inner == nil {
		return nil
	}
	return &redactedError{msg: Redact(e.connString, inner.Error()), err: inner, connString: e.connString}
}

func (e *redactedError) Is(target error) bool { return errors.Is(e.err, target) }

// passwordsOf returns the password of a connection string in every
// spelling a text may show it: decoded, as written, and percent-encoded.
// For a URL, as written is everything between the user and the last '@'
// before the query (or the last '@' at all, when that part has none).
func passwordsOf(connString string) []string {
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	pw := passwordOf(connString)
	add(pw)
	if !isURL(connString) {
		// As written, and as pgx v5.8 reads an unquoted value (only \\
		// and \' unescaped: "a\ b" stays so).
		for _, m := range passwordKV.FindAllStringSubmatch(connString, -1) {
			raw := strings.TrimSuffix(strings.TrimPrefix(m[1], "'"), "'")
			add(raw)
			add(strings.NewReplacer(`\\`, `\`, `\'`, `'`).Replace(raw))
		}
	}
	add(url.QueryEscape(pw))
	add(url.PathEscape(pw))
	if isURL(connString) {
		rest := connString[strings.Index(connString, "://")+3:]
		scope := rest
		if q := strings.IndexByte(rest, '?'); q >= 0 && strings.Contains(rest[:q], "@") {
			scope = rest[:q]
		}
		if at := strings.LastIndexByte(scope, '@'); at > 0 {
			if _, raw, ok := strings.Cut(scope[:at], ":"); ok {
				add(raw)
				if dec, err := url.PathUnescape(raw); err == nil {
					add(dec)
				}
			}
		}
	}
	// pgx, like libpq, drops the spaces around a URL's components: the
	// password it sends (and an error may quote) is the trimmed one.
	for _, pw := range out {
		add(strings.Trim(pw, " "))
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// passwordOf finds the password in a connection string, best effort.
func passwordOf(connString string) string {
	if isURL(connString) {
		return urlPassword(connString)
	}
	return checker.ConnInfoValue(connString, "password")
}
