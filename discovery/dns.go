package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DNSConfig configures a [DNS] Discoverer.
type DNSConfig struct {
	// Name is the DNS name whose A and AAAA records are the nodes, such as
	// a Kubernetes headless service (db.prod.svc.cluster.local). Required.
	Name string

	// Port is every node's port. Required.
	Port uint16

	// Interval is the time between two looks (give or take 10%). Default
	// DefaultDNSInterval; while looks fail they are retried sooner, with
	// exponential backoff from MinInterval up to Interval.
	Interval time.Duration

	// MinInterval is the shortest time between two looks, which bounds
	// how often Refresh makes one. Default DefaultMinInterval.
	MinInterval time.Duration

	// Timeout bounds one look. Default DefaultDNSTimeout.
	Timeout time.Duration

	// MaxNodes is the most addresses an answer may hold; one with more is
	// an error that wraps ErrTooManyNodes (the last good set stays).
	// Default DefaultMaxNodes.
	MaxNodes int

	// Resolver resolves Name. Default net.DefaultResolver; tests point one
	// at a DNS server of their own through its Dial field. Its fields are
	// read at each look; a query in flight ends when the look does (when
	// the Discoverer stops, or at Timeout), through Go's resolver only.
	Resolver *net.Resolver
}

// DNS is a Discoverer whose nodes are every address of a DNS name, looked
// up again every interval and on Refresh. Nodes come in address order, IPv4
// before IPv6, with no Name and no Tags. A name that does not exist or has
// no address is an error that wraps ErrNoNodes (the last good set stays).
// It is safe for concurrent use; see [Discoverer] for Run.
type DNS struct {
	cfg  DNSConfig // read-only after NewDNS
	poll *poller
}

var (
	_ Refresher = (*DNS)(nil)
	_ Refresher = (*SRV)(nil)
	_ Refresher = (*Patroni)(nil)
)

// NewDNS returns a DNS Discoverer, or an error naming what is wrong in cfg.
func NewDNS(cfg DNSConfig) (*DNS, error) {
	if err := checkName(cfg.Name); err != nil {
		return nil, fmt.Errorf("discovery: dns: %w", err)
	}
	if cfg.Port == 0 {
		return nil, errors.New("discovery: dns: no port")
	}
	var err error
	if cfg.Interval, cfg.MinInterval, cfg.Timeout, err = timings("dns", cfg.Interval, cfg.MinInterval, cfg.Timeout, DefaultDNSInterval, DefaultDNSTimeout); err != nil {
		return nil, err
	}
	if cfg.MaxNodes, err = maxNodesOr("dns", cfg.MaxNodes); err != nil {
		return nil, err
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	d := &DNS{cfg: cfg}
	d.poll = newPoller("dns "+cfg.Name, cfg.Interval, cfg.MinInterval, cfg.Timeout, cfg.MaxNodes, d.look)
	return d, nil
}

// Config returns the configuration with its defaults filled in.
func (d *DNS) Config() DNSConfig { return d.cfg }

// Run implements Discoverer.
func (d *DNS) Run(ctx context.Context, update func(State)) error { return d.poll.run(ctx, update) }

// Refresh implements Refresher: a look as soon as MinInterval has passed
// since the last one.
func (d *DNS) Refresh() { d.poll.Refresh() }

// String describes the Discoverer, for logs: "dns db.example.com port 5432".
func (d *DNS) String() string {
	return "dns " + d.cfg.Name + " port " + strconv.Itoa(int(d.cfg.Port))
}

func (d *DNS) look(ctx context.Context) ([]Node, error) {
	addrs, err := lookupAddrs(ctx, cancellable(d.cfg.Resolver), d.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("discovery: dns %s: %w", d.cfg.Name, err)
	}
	nodes := make([]Node, len(addrs))
	for i, a := range addrs {
		nodes[i] = Node{Addr: netip.AddrPortFrom(a, d.cfg.Port).String()}
	}
	return nodes, nil
}

// cancellable returns a resolver that asks as r does now, and whose
// queries end when the lookup's context does. Go's resolver stops waiting
// for a lookup whose context ends, but its own goroutines go on reading the
// query's socket until the resolver's timeout (5 s by default, per try):
// moving the socket's deadline to the past when the query's context ends
// stops them with the Discoverer, so that nothing of a closed Manager goes
// on running. (A query that ends by its own deadline times out as it would
// have; one that ended normally has its socket closed already, and setting
// a deadline on it does nothing.) Lookups that do not use the Go resolver
// (cgo) are unchanged: they never dial through it. A look makes one, so
// that a change to r's fields after the Discoverer was made is followed.
func cancellable(r *net.Resolver) *net.Resolver {
	dial := r.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	// StrictErrors: a temporary failure of one query of the look (the
	// AAAA of an A+AAAA lookup, one name of the search list) fails the
	// whole look, so that the last good set stays; without it Go's
	// resolver answers with the other query's addresses alone, and the
	// nodes of the failed one would leave the set.
	return &net.Resolver{PreferGo: r.PreferGo, StrictErrors: true,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			c, err := dial(ctx, network, address)
			if err != nil {
				return nil, err
			}
			context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
			return c, nil
		}}
}

// lookupAddrs returns the addresses of name, sorted, without duplicates. A
// name that does not exist or has no address gives an error that wraps
// ErrNoNodes.
func lookupAddrs(ctx context.Context, r *net.Resolver, name string) ([]netip.Addr, error) {
	addrs, err := r.LookupNetIP(ctx, "ip", name)
	if err != nil {
		if notFound(err) {
			return nil, fmt.Errorf("%w: %w", ErrNoNodes, err)
		}
		return nil, err
	}
	for i, a := range addrs {
		addrs[i] = a.Unmap()
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	if len(addrs) == 0 {
		return nil, ErrNoNodes
	}
	return addrs, nil
}

// notFound reports whether err says that a name does not exist, or has no
// record of the type asked for.
func notFound(err error) bool {
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr) && dnsErr.IsNotFound
}

// SRVConfig configures an [SRV] Discoverer.
type SRVConfig struct {
	// Name is the SRV record's name: "_postgresql._tcp.db.example.com", or
	// "db.example.com", which means that. A name that starts with '_' is
	// used as it is. Required.
	Name string

	// Interval, MinInterval, Timeout and Resolver are as in DNSConfig
	// (Timeout bounds the SRV lookup and those of its targets together).
	Interval    time.Duration
	MinInterval time.Duration
	Timeout     time.Duration
	Resolver    *net.Resolver

	// MaxNodes is the most records the SRV answer, the addresses of one
	// target, and the nodes of a look in all may each hold; more is an
	// error that wraps ErrTooManyNodes (the last good set stays). Default
	// DefaultMaxNodes.
	MaxNodes int
}

// SRV is a Discoverer whose nodes come from an SRV record: each target's
// addresses, with the record's port, looked up again every interval and on
// Refresh. Nodes come by priority (lowest first), then weight (highest
// first), then target and address; Name is the target (without its final
// dot) and the tags srv_priority and srv_weight hold the record's values.
// A target whose name does not exist is left out; any other failure of a
// lookup fails the whole look, keeping the last good set. It is safe for
// concurrent use; see [Discoverer] for Run.
type SRV struct {
	cfg    SRVConfig // read-only after NewSRV
	record string    // the full name looked up
	poll   *poller
}

// Tags of the nodes an SRV Discoverer finds.
const (
	TagSRVPriority = "srv_priority"
	TagSRVWeight   = "srv_weight"
)

// NewSRV returns an SRV Discoverer, or an error naming what is wrong in cfg.
func NewSRV(cfg SRVConfig) (*SRV, error) {
	if err := checkName(cfg.Name); err != nil {
		return nil, fmt.Errorf("discovery: srv: %w", err)
	}
	var err error
	if cfg.Interval, cfg.MinInterval, cfg.Timeout, err = timings("srv", cfg.Interval, cfg.MinInterval, cfg.Timeout, DefaultDNSInterval, DefaultDNSTimeout); err != nil {
		return nil, err
	}
	if cfg.MaxNodes, err = maxNodesOr("srv", cfg.MaxNodes); err != nil {
		return nil, err
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	s := &SRV{cfg: cfg, record: srvRecord(cfg.Name)}
	s.poll = newPoller("srv "+s.record, cfg.Interval, cfg.MinInterval, cfg.Timeout, cfg.MaxNodes, s.look)
	return s, nil
}

// srvRecord returns the record name that name stands for.
func srvRecord(name string) string {
	if strings.HasPrefix(name, "_") {
		return name
	}
	return "_postgresql._tcp." + name
}

// Config returns the configuration with its defaults filled in.
func (s *SRV) Config() SRVConfig { return s.cfg }

// Run implements Discoverer.
func (s *SRV) Run(ctx context.Context, update func(State)) error { return s.poll.run(ctx, update) }

// Refresh implements Refresher: a look as soon as MinInterval has passed
// since the last one.
func (s *SRV) Refresh() { s.poll.Refresh() }

// String describes the Discoverer, for logs: "srv _postgresql._tcp.db.example.com".
func (s *SRV) String() string { return "srv " + s.record }

func (s *SRV) look(ctx context.Context) ([]Node, error) {
	resolver := cancellable(s.cfg.Resolver)
	_, records, err := resolver.LookupSRV(ctx, "", "", s.record)
	if err != nil {
		if notFound(err) {
			return nil, fmt.Errorf("discovery: srv %s: %w: %w", s.record, ErrNoNodes, err)
		}
		return nil, fmt.Errorf("discovery: srv %s: %w", s.record, err)
	}
	// Before any target is looked up: each costs a lookup.
	if len(records) > s.cfg.MaxNodes {
		return nil, tooMany("srv "+s.record, len(records), s.cfg.MaxNodes)
	}
	slices.SortStableFunc(records, func(a, b *net.SRV) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(b.Weight, a.Weight),
			cmp.Compare(a.Target, b.Target), cmp.Compare(a.Port, b.Port))
	})
	resolved := map[string][]netip.Addr{}
	var nodes []Node
	seen := map[string]bool{}
	for _, rec := range records {
		target := strings.TrimSuffix(rec.Target, ".")
		if target == "" || rec.Port == 0 {
			continue // "." means no service at this name
		}
		addrs, ok := resolved[target]
		if !ok {
			addrs, err = lookupAddrs(ctx, resolver, target)
			if err != nil && !errors.Is(err, ErrNoNodes) {
				return nil, fmt.Errorf("discovery: srv %s: target %s: %w", s.record, target, err)
			}
			if len(addrs) > s.cfg.MaxNodes {
				return nil, tooMany("srv "+s.record+" target "+target, len(addrs), s.cfg.MaxNodes)
			}
			resolved[target] = addrs // none when it does not exist
		}
		for _, a := range addrs {
			addr := netip.AddrPortFrom(a, rec.Port).String()
			if seen[addr] {
				continue
			}
			seen[addr] = true
			nodes = append(nodes, Node{
				Addr: addr,
				Name: target,
				Tags: map[string]string{
					TagSRVPriority: strconv.Itoa(int(rec.Priority)),
					TagSRVWeight:   strconv.Itoa(int(rec.Weight)),
				},
			})
		}
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("discovery: srv %s: %w", s.record, ErrNoNodes)
	}
	return nodes, nil
}

// timings validates and defaults a config's durations.
func timings(kind string, interval, minInterval, timeout, defInterval, defTimeout time.Duration) (time.Duration, time.Duration, time.Duration, error) {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Interval", interval}, {"MinInterval", minInterval}, {"Timeout", timeout}} {
		if d.v < 0 {
			return 0, 0, 0, fmt.Errorf("discovery: %s: %s %s: must not be negative", kind, d.name, d.v)
		}
	}
	interval = durationOr(interval, defInterval)
	minInterval = min(durationOr(minInterval, DefaultMinInterval), interval)
	timeout = durationOr(timeout, defTimeout)
	return interval, minInterval, timeout, nil
}
