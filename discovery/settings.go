package discovery

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The connection string settings of discovery (see the README's table).
const (
	// SettingDiscovery chooses the Discoverer: "dns", "srv", "patroni", or
	// "static" (the default: the connection string's hosts).
	SettingDiscovery = "hasql_discovery"
	// SettingName is the DNS name (dns) or SRV name (srv). Default: the
	// connection string's host, when it has one.
	SettingName = "hasql_discovery_name"
	// SettingPort is every node's port (dns). Default: the connection
	// string's port.
	SettingPort = "hasql_discovery_port"
	// SettingInterval is the time between two looks (dns, srv, patroni).
	SettingInterval = "hasql_discovery_interval"
	// SettingTimeout bounds one look (dns, srv) or one request to one
	// member's API (patroni).
	SettingTimeout = "hasql_discovery_timeout"
	// SettingURLs are Patroni REST API URLs, separated by commas
	// (patroni). Default: http://host:8008 for each host of the connection
	// string.
	SettingURLs = "hasql_discovery_urls"
	// SettingMaxNodes is the most nodes one answer may hold (dns, srv,
	// patroni). Default DefaultMaxNodes.
	SettingMaxNodes = "hasql_discovery_max_nodes"
)

// DefaultPatroniPort is the port of Patroni's REST API that SettingURLs
// defaults to.
const DefaultPatroniPort = "8008"

// SettingKeys returns the setting names FromSettings reads.
func SettingKeys() []string {
	return []string{SettingDiscovery, SettingName, SettingPort, SettingInterval, SettingTimeout, SettingURLs, SettingMaxNodes}
}

// settingModes lists, for each setting beside SettingDiscovery, the modes
// it applies to.
var settingModes = map[string][]string{
	SettingName:     {"dns", "srv"},
	SettingPort:     {"dns"},
	SettingInterval: {"dns", "srv", "patroni"},
	SettingTimeout:  {"dns", "srv", "patroni"},
	SettingURLs:     {"patroni"},
	SettingMaxNodes: {"dns", "srv", "patroni"},
}

// FromSettings returns the Discoverer that a connection string's discovery
// settings describe. settings holds the connection string's parameters
// (keys other than SettingKeys are ignored); hosts are its "host:port"
// addresses, in order, which give the defaults: with no SettingDiscovery,
// or "static", a [Static] Discoverer of hosts; with "dns" or "srv", the
// name is the host when there is one; with "patroni", the REST APIs are
// each host's port 8008.
//
// Every error names the setting and the value at fault. A setting that
// does not apply to the chosen Discoverer is an error, not ignored. The
// Discoverers use net.DefaultResolver and a default HTTP client; build one
// with NewDNS, NewSRV or NewPatroni for others.
func FromSettings(settings map[string]string, hosts []string) (Discoverer, error) {
	mode, ok := settings[SettingDiscovery]
	mode = strings.ToLower(strings.TrimSpace(mode))
	if !ok || mode == "" {
		mode = "static"
	}
	switch mode {
	case "static", "dns", "srv", "patroni":
	default:
		return nil, fmt.Errorf("discovery: %s %q: want dns, srv, patroni or static", SettingDiscovery, settings[SettingDiscovery])
	}
	for _, key := range SettingKeys()[1:] {
		if v, ok := settings[key]; ok && !slices.Contains(settingModes[key], mode) {
			return nil, fmt.Errorf("discovery: %s %q: applies to %s=%s only, not %s", key, shown(key, v),
				SettingDiscovery, strings.Join(settingModes[key], " or "), mode)
		}
	}

	var interval, timeout time.Duration
	for _, d := range []struct {
		key string
		dst *time.Duration
		min time.Duration
	}{{SettingInterval, &interval, 10 * time.Millisecond}, {SettingTimeout, &timeout, time.Millisecond}} {
		v, ok := settings[d.key]
		if !ok {
			continue
		}
		parsed, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("discovery: %s %q: want a duration such as 500ms or 10s", d.key, v)
		}
		if parsed < d.min {
			return nil, fmt.Errorf("discovery: %s %q: must be at least %s", d.key, v, d.min)
		}
		*d.dst = parsed
	}

	var maxNodes int
	if v, ok := settings[SettingMaxNodes]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("discovery: %s %q: want a number of nodes, 1 or more", SettingMaxNodes, v)
		}
		maxNodes = n
	}

	switch mode {
	case "dns", "srv":
		name, port, err := nameAndPort(settings, hosts, mode)
		if err != nil {
			return nil, err
		}
		if mode == "srv" {
			return discoverer(NewSRV(SRVConfig{Name: name, Interval: interval, Timeout: timeout, MaxNodes: maxNodes}))
		}
		if v, ok := settings[SettingPort]; ok {
			if port, err = parsePort(strings.TrimSpace(v)); err != nil {
				return nil, fmt.Errorf("discovery: %s %q: want a number from 1 to 65535", SettingPort, v)
			}
		}
		if port == 0 {
			return nil, fmt.Errorf("discovery: %s=dns: give %s or a port in the connection string", SettingDiscovery, SettingPort)
		}
		return discoverer(NewDNS(DNSConfig{Name: name, Port: port, Interval: interval, Timeout: timeout, MaxNodes: maxNodes}))
	case "patroni":
		var urls []string
		if v, ok := settings[SettingURLs]; ok {
			for _, u := range splitURLs(v) {
				u = strings.TrimSpace(u)
				if u == "" || strings.HasSuffix(u, ",") { // see splitURLs
					return nil, fmt.Errorf("discovery: %s %q: an empty URL in the list", SettingURLs, shown(SettingURLs, v))
				}
				if _, err := apiBase(u); err != nil {
					return nil, fmt.Errorf("discovery: %s: %w", SettingURLs, err)
				}
				urls = append(urls, u)
			}
		} else {
			for _, h := range hosts {
				host, _, err := net.SplitHostPort(h)
				if err != nil || host == "" {
					return nil, fmt.Errorf("discovery: %s=patroni: host %q: want host:port", SettingDiscovery, h)
				}
				if strings.HasPrefix(host, "/") || strings.HasPrefix(host, "@") {
					continue // a Unix socket's directory: no REST API there
				}
				// url.URL writes an IPv6 zone's '%' as "%25".
				u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, DefaultPatroniPort)}
				urls = append(urls, u.String())
			}
			if len(urls) == 0 {
				return nil, fmt.Errorf("discovery: %s=patroni: give %s or network hosts in the connection string (a socket directory has no REST API)", SettingDiscovery, SettingURLs)
			}
		}
		return discoverer(NewPatroni(PatroniConfig{URLs: urls, Interval: interval, Timeout: timeout, MaxNodes: maxNodes}))
	}

	nodes := make([]Node, len(hosts))
	for i, h := range hosts {
		nodes[i] = Node{Addr: h}
	}
	return discoverer(NewStatic(nodes...))
}

// discoverer returns a constructor's result as a Discoverer: nil, not a nil
// pointer in an interface, with an error.
func discoverer[D Discoverer](d D, err error) (Discoverer, error) {
	if err != nil {
		return nil, err
	}
	return d, nil
}

// nameAndPort returns the name of a dns or srv discovery, and the port of
// the connection string's host when the name is that host (0 otherwise).
func nameAndPort(settings map[string]string, hosts []string, mode string) (string, uint16, error) {
	var port uint16
	if len(hosts) == 1 {
		if _, p, err := net.SplitHostPort(hosts[0]); err == nil {
			port, _ = parsePort(p)
		}
	}
	if v, ok := settings[SettingName]; ok {
		name := strings.TrimSpace(v)
		if err := checkName(name); err != nil {
			return "", 0, fmt.Errorf("discovery: %s %q: want a DNS name such as db.example.com", SettingName, v)
		}
		return name, port, nil
	}
	if len(hosts) != 1 {
		return "", 0, fmt.Errorf("discovery: %s=%s: give %s, or a single host in the connection string (it has %d)", SettingDiscovery, mode, SettingName, len(hosts))
	}
	host, _, err := net.SplitHostPort(hosts[0])
	if err != nil {
		return "", 0, fmt.Errorf("discovery: %s=%s: host %q: want host:port", SettingDiscovery, mode, hosts[0])
	}
	if err := checkName(host); err != nil {
		return "", 0, fmt.Errorf("discovery: %s=%s: the connection string's host %q: want a DNS name such as db.example.com", SettingDiscovery, mode, host)
	}
	return host, port, nil
}

// splitURLs splits a list of URLs at its commas, except at a comma that
// does not begin a URL (one not followed by a scheme and "://", such as
// "http://"): that one is part of the URL before it, as a
// comma in its password is, so that the password is never cut in two and
// shown half in an error. An empty entry ("a,,http://b", "a,") leaves a URL
// that ends in a comma.
func splitURLs(v string) []string {
	var out []string
	for i, p := range strings.Split(v, ",") {
		if i > 0 && !hasScheme(strings.TrimSpace(p)) {
			out[len(out)-1] += "," + p
			continue
		}
		out = append(out, p)
	}
	return out
}

// hasScheme reports whether s begins with a URL scheme and "://".
func hasScheme(s string) bool {
	scheme, _, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return false
	}
	for i, r := range scheme {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.'):
		default:
			return false
		}
	}
	return true
}

// shown returns a setting's value as an error may show it: URLs without
// their passwords.
func shown(key, v string) string {
	if key != SettingURLs {
		return v
	}
	parts := splitURLs(v)
	for i, p := range parts {
		if u, err := apiBase(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		} else {
			parts[i] = redactURL(strings.TrimSpace(p))
		}
	}
	return strings.Join(parts, ",")
}
