package hasql

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgxha/pgxha/balancer"
	"github.com/pgxha/pgxha/checker"
	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql/internal/topology"
)

// Option changes a Config for New: everything a connection string cannot
// carry.
type Option func(*Config) error

// WithDiscoverer sets where the node set comes from while the Manager runs
// (see Config.Discoverer and package discovery): discovery.NewDNS, NewSRV,
// NewPatroni, or a Discoverer of your own.
func WithDiscoverer(d discovery.Discoverer) Option {
	return func(c *Config) error {
		if d == nil {
			return fmt.Errorf("hasql: WithDiscoverer: nil discoverer")
		}
		c.Discoverer = d
		return nil
	}
}

// WithZone sets the caller's zone: plain replica reads prefer replicas
// whose "zone" tag has this value (see Config.Zone).
func WithZone(zone string) Option {
	return func(c *Config) error { c.Zone = zone; return nil }
}

// WithBalancer sets the balancer (see package balancer; any Builder works).
func WithBalancer(b balancer.Builder) Option {
	return func(c *Config) error {
		if b == nil {
			return fmt.Errorf("hasql: WithBalancer: nil balancer")
		}
		c.Balancer = b
		return nil
	}
}

// WithChecker sets the node checker.
func WithChecker(ch checker.Checker) Option {
	return func(c *Config) error {
		if ch == nil {
			return fmt.Errorf("hasql: WithChecker: nil checker")
		}
		c.Checker = ch
		return nil
	}
}

// WithLogger sets the logger for role changes, node failures and split brain.
func WithLogger(l *slog.Logger) Option {
	return func(c *Config) error { c.Logger = l; return nil }
}

// WithMeterProvider sets the OpenTelemetry meter provider.
func WithMeterProvider(p metric.MeterProvider) Option {
	return func(c *Config) error { c.MeterProvider = p; return nil }
}

// WithTracerProvider sets the OpenTelemetry tracer provider.
func WithTracerProvider(p trace.TracerProvider) Option {
	return func(c *Config) error { c.TracerProvider = p; return nil }
}

// WithConfigureNode sets a hook that adjusts each node's pool configuration.
func WithConfigureNode(f func(node NodeConfig, cfg *pgxpool.Config) error) Option {
	return func(c *Config) error { c.ConfigureNode = f; return nil }
}

// WithCheckInterval and WithCheckTimeout set what hasql_check_interval and
// hasql_check_timeout set.
func WithCheckInterval(d time.Duration) Option {
	return func(c *Config) error { c.CheckInterval = d; return nil }
}

// WithCheckTimeout sets the per-check timeout.
func WithCheckTimeout(d time.Duration) Option {
	return func(c *Config) error { c.CheckTimeout = d; return nil }
}

// WithMasterReadWeight lets the master serve reads with weight w relative to
// a replica's 1 (0: never, except through FallbackToMaster).
func WithMasterReadWeight(w float64) Option {
	return func(c *Config) error {
		if w < 0 || math.IsNaN(w) || math.IsInf(w, 0) {
			return fmt.Errorf("hasql: WithMasterReadWeight %v: want a number >= 0", w)
		}
		c.MasterReadWeight = w
		return nil
	}
}

// WithDecisionTrace writes every event the Manager's decision core takes
// and what it decided after each to w, one JSON object a line: a trace to
// attach to a bug report, which ReplayDecisionTrace (and the project's
// tests) replay into the decision core to find where a decision differs.
// The trace holds what checks found (roles, positions, timelines, node
// addresses and names), never a password. Writes happen outside the
// Manager's lock, in order, on the goroutines that run the checks: w must
// not block (a file or a buffer; not a pipe nobody reads), or checks wait
// for it. w need not be safe for concurrent use.
func WithDecisionTrace(w io.Writer) Option {
	return func(c *Config) error {
		c.DecisionTrace = w
		return nil
	}
}

// ReplayDecisionTrace feeds the events of a trace written by
// WithDecisionTrace into a fresh decision core of this version and
// returns the first decision that differs from the recorded one (nil when
// none does), and how many events it read.
func ReplayDecisionTrace(r io.Reader) (events int, err error) {
	return topology.Replay(r)
}

// WithSystemIdentifier pins the cluster's system identifier (see
// Config.SystemIdentifier).
func WithSystemIdentifier(id uint64) Option {
	return func(c *Config) error {
		if id == 0 {
			return fmt.Errorf("hasql: WithSystemIdentifier: 0 is no system identifier")
		}
		c.SystemIdentifier = id
		return nil
	}
}

// WithReplicaName tells the manager the name under which the node at addr
// appears in its master's pg_stat_replication (application_name), for
// replicas whose name the checker cannot find out itself (no pg_monitor role,
// a name set by a proxy). addr is as written in the connection string or,
// with a Discoverer, as the Discoverer reports it ("host:port"): a node it
// adds at that address gets this name, whatever name it reports.
func WithReplicaName(addr, name string) Option {
	return func(c *Config) error {
		for i := range c.Nodes {
			if c.Nodes[i].Addr == addr {
				c.Nodes[i].Name = name
				return nil
			}
		}
		c.setLater(addr, func(s *nodeSetting) { s.name = name })
		return nil
	}
}

// WithNodeWeight sets the balancer weight of the node at addr (default 1).
// addr is as in WithReplicaName.
func WithNodeWeight(addr string, w float64) Option {
	return func(c *Config) error {
		if !(w > 0) || math.IsInf(w, 0) {
			return fmt.Errorf("hasql: WithNodeWeight %s: weight %v: want a number > 0", addr, w)
		}
		for i := range c.Nodes {
			if c.Nodes[i].Addr == addr {
				c.Nodes[i].Weight = w
				return nil
			}
		}
		c.setLater(addr, func(s *nodeSetting) { s.weight = w })
		return nil
	}
}

// nodeSetting is what WithNodeWeight and WithReplicaName set for an address
// the connection string does not name: a Discoverer may add a node there.
type nodeSetting struct {
	weight float64 // 0: not set
	name   string
}

// setLater records a setting for addr, a node the connection string does
// not name; NewWithConfig refuses it unless a Discoverer is set.
func (c *Config) setLater(addr string, set func(*nodeSetting)) {
	if c.later == nil {
		c.later = map[string]nodeSetting{}
	}
	s := c.later[addr]
	set(&s)
	c.later[addr] = s
}

func addrList(nodes []NodeConfig) string {
	s := ""
	for i, n := range nodes {
		if i > 0 {
			s += ", "
		}
		s += n.Addr
	}
	return s
}

// ReplicaOption narrows which replicas AcquireReplica and Replica may use.
// It is a plain value (not a function), so that applying options costs an
// acquire no allocation; make one with SyncOnly, PreferSync, MaxLag,
// FallbackToMaster, MinLSN or MinLSNWait. The zero ReplicaOption does
// nothing.
type ReplicaOption struct {
	kind replicaOptionKind
	n    int64 // bytes of MaxLag, the LSN of MinLSN
	d    time.Duration
	k, v string // the tag of WithTag, the zone of PreferZone
	tl   uint32 // the timeline of After's token
	sys  uint64 // the system identifier of After's token
}

type replicaOptionKind uint8

const (
	optNone replicaOptionKind = iota
	optSyncOnly
	optPreferSync
	optMaxLag
	optFallback
	optMinLSN
	optMinLSNWait
	optTag
	optZone
	optAfter
	optPreferMaster
)

// singleOptions are the options of one ReplicaOption that only chooses
// among the prepared sets, made once: the acquire path takes them as they
// are instead of filling options of its own. Never written to (the slow
// path works on a copy).
var singleOptions = [...]*replicaOptions{
	optSyncOnly:     {syncOnly: true},
	optPreferSync:   {preferSync: true},
	optFallback:     {fallback: true},
	optPreferMaster: {preferMaster: true},
}

// apply sets what r asks for in o.
func (r ReplicaOption) apply(o *replicaOptions) {
	switch r.kind {
	case optSyncOnly:
		o.syncOnly = true
	case optPreferSync:
		o.preferSync = true
	case optMaxLag:
		o.lagSet, o.maxLagBytes, o.maxLag = true, r.n, r.d
	case optFallback:
		o.fallback = true
	case optMinLSN:
		o.minLSN = LSN(r.n)
	case optMinLSNWait:
		o.minLSNWait, o.minLSNWaitSet = r.d, true
	case optTag:
		o.tags = append(o.tags, [2]string{r.k, r.v})
	case optZone:
		o.zone = r.v
	case optAfter:
		// Each token is resolved on its own (see resolveAfter): merged,
		// the later one would stand for both, and a write of the other
		// lost in a failover, or its other cluster, would go unreported.
		switch tok := (Token{LSN: LSN(r.n), Timeline: r.tl, SystemID: r.sys}); {
		case tok.IsZero():
		case o.after.IsZero():
			o.after = tok
		default:
			o.afterMore = append(o.afterMore, tok)
		}
		o.hasAfter = true
	case optPreferMaster:
		o.preferMaster = true
	}
}

type replicaOptions struct {
	syncOnly    bool
	preferSync  bool
	fallback    bool
	lagSet      bool
	maxLagBytes int64
	maxLag      time.Duration
	minLSN      LSN
	minLSNWait  time.Duration
	tags        [][2]string // WithTag: key and value every replica must have
	zone        string      // PreferZone
	// After's tokens (the first, then any other), resolved into minLSN
	// (and fallback) when an acquire begins (see resolveAfter); MinLSNWait
	// given explicitly.
	after         Token
	afterMore     []Token
	hasAfter      bool
	minLSNWaitSet bool
	preferMaster  bool // PreferMaster
	// lineFrom, when not 0, is the timeline of After's token, older than
	// the cluster's, whose position lies before that timeline ended: a
	// replica that shows lineFrom or a newer one, though older than the
	// cluster's, has the write once past the position (see notBehind).
	lineFrom uint32
	// line is the cluster's timeline After's tokens were resolved against
	// (0 without After): a replica asked how far it replayed must show
	// it, or one from lineFrom on (see onLine).
	line uint32
	// system is the system identifier After's tokens were taken on (0:
	// without After, or not known): a server of another has none of their
	// writes, however far its WAL runs (see ofSystem).
	system uint64
}

// ofSystem reports whether n may hold o's tokens' writes for its system
// identifier: the tokens' own, or one its checks did not show. While the
// cluster is not learned (no master seen yet, and the nodes disagree), a
// server of another cluster serves plain reads; never one after a token.
func (o *replicaOptions) ofSystem(n *node) bool {
	if o.system == 0 {
		return true
	}
	s := n.serverSys.Load()
	return s == 0 || s == o.system
}

// onLine reports whether a replica that shows timeline tl (0: unknown)
// replays the line o's tokens were resolved against.
func (o *replicaOptions) onLine(tl uint32) bool {
	lo := o.line
	if o.lineFrom != 0 {
		lo = o.lineFrom
	}
	return tl != 0 && tl >= lo && tl <= o.line
}

// tokens returns After's tokens as text, for an error.
func (o *replicaOptions) tokens() string {
	s := o.after.String()
	for _, t := range o.afterMore {
		s += ", " + t.String()
	}
	return s
}

// replayed is n's replay position as o may count it: a position a probe
// read with the timeline not shown counts for a plain MinLSN, not for
// After's tokens, whose timeline it could not tell (see probedReplay).
func (o *replicaOptions) replayed(n *node) LSN {
	if o.hasAfter || o.line != 0 {
		return LSN(n.replayLSN.Load())
	}
	return n.replayedAny()
}

// notBehind reports whether n may serve a read after o's position for
// what its timeline shows: not behind the cluster's timeline (see
// behindTimeline), or, for a token of an older timeline whose position
// lies before that timeline ended, on that timeline or a newer one.
func (o *replicaOptions) notBehind(n *node, s *snapshot) bool {
	return !n.behindTimeline(s) || o.lineFrom != 0 && n.serverTL.Load() >= o.lineFrom
}

// applyOptions sets in o what opts ask for. It fills o in place rather
// than returning a value: a returned copy would be read back right after
// its fields were written a byte at a time, a store-to-load stall that costs
// more on the acquire path than everything else the options do.
func applyOptions(o *replicaOptions, opts []ReplicaOption) {
	for _, opt := range opts {
		opt.apply(o)
	}
}

// custom reports whether the options need a candidate set of their own,
// beyond the sets every snapshot prepares.
func (o *replicaOptions) custom() bool {
	return o.lagSet || o.minLSN != 0 || len(o.tags) > 0 || o.zone != "" || o.hasAfter || o.system != 0
}

// WithTokenWait sets how long a read with After waits for a replica that
// has the token's write before it takes the master (see Config.TokenWait).
func WithTokenWait(d time.Duration) Option {
	return func(c *Config) error {
		if d < 0 {
			return fmt.Errorf("hasql: WithTokenWait %s: must not be negative", d)
		}
		c.TokenWait = d
		return nil
	}
}

// WithTag accepts only replicas whose tag key has the value value (tags
// come from the node set's source: Patroni's tags, SRV's, your own
// Discoverer's). Several WithTag options must all match.
func WithTag(key, value string) ReplicaOption { return ReplicaOption{kind: optTag, k: key, v: value} }

// PreferZone prefers replicas whose "zone" tag is zone, and takes the
// others when none of those qualifies. It replaces the Manager's own zone
// (WithZone, hasql_zone) for this call.
func PreferZone(zone string) ReplicaOption { return ReplicaOption{kind: optZone, v: zone} }

// SyncOnly accepts only synchronous replicas.
func SyncOnly() ReplicaOption { return ReplicaOption{kind: optSyncOnly} }

// PreferSync uses synchronous replicas while any qualifies, then
// asynchronous ones.
func PreferSync() ReplicaOption { return ReplicaOption{kind: optPreferSync} }

// MaxLag accepts only replicas at most bytes of WAL and d of time behind the
// master; 0 means no limit for that measure. It replaces the connection
// string's hasql_max_lag_bytes and hasql_max_lag for this call. A replica
// whose lag is not known (no master seen yet) does not qualify while a limit
// is set.
func MaxLag(bytes int64, d time.Duration) ReplicaOption {
	return ReplicaOption{kind: optMaxLag, n: max(bytes, 0), d: max(d, 0)}
}

// FallbackToMaster uses the master when no replica qualifies, instead of
// waiting for one.
func FallbackToMaster() ReplicaOption { return ReplicaOption{kind: optFallback} }

// MinLSN accepts only replicas that have replayed WAL up to lsn, for
// read-your-writes: take the LSN after a write (see Manager.CurrentLSN) and
// pass it here. A replica whose last check is behind lsn is asked again on
// the connection itself before it is refused. With FallbackToMaster the
// master serves when no replica has caught up within MinLSNWait.
func MinLSN(lsn LSN) ReplicaOption { return ReplicaOption{kind: optMinLSN, n: int64(lsn)} }

// MinLSNWait bounds how long an acquire with MinLSN waits for a replica to
// catch up before it falls back to the master (with FallbackToMaster) or
// keeps waiting until its context ends. Default 0: fall back at once.
func MinLSNWait(d time.Duration) ReplicaOption {
	return ReplicaOption{kind: optMinLSNWait, d: max(d, 0)}
}
