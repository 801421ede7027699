package hasql

import (
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgxha/pgxha/discovery"
)

// nodeTLS returns n's connection variants (host, port and TLS settings,
// one per TLS variant of sslmode) for a node's pool whose configuration pc
// is a fresh copy of Config.PoolConfig.
//
// The TLS configurations are taken from pc itself, never from n: pgx (from
// v5.13) keeps the client certificate of sslcert and sslkey beside each TLS
// configuration it parsed, keyed by that configuration, and Config.Copy
// carries it to the copies alone; any other configuration, a clone
// included, presents no certificate. A node the connection string does not
// name (a discovered one) takes the first host's variants of pc, which
// nothing else uses, with its server name (see discoveredTLS) set before
// any use.
func nodeTLS(pc *pgxpool.Config, n NodeConfig, first NodeConfig) []*pgconn.FallbackConfig {
	cc := &pc.ConnConfig.Config
	all := append([]*pgconn.FallbackConfig{{Host: cc.Host, Port: cc.Port, TLSConfig: cc.TLSConfig}}, cc.Fallbacks...)
	used := make([]bool, len(all))
	find := func(host string, port uint16, withTLS bool) *tls.Config {
		for i, e := range all {
			if !used[i] && e.Host == host && e.Port == port && (e.TLSConfig != nil) == withTLS {
				used[i] = true
				return e.TLSConfig
			}
		}
		return nil
	}
	out := make([]*pgconn.FallbackConfig, 0, len(n.tls))
	for _, v := range n.tls {
		tc := v.TLSConfig
		if tc != nil {
			if own := find(v.Host, v.Port, true); own != nil {
				tc = own
			} else if src := find(first.Host, first.Port, true); src != nil {
				// A copy of pc's own, not yet handed to any TLS function:
				// it may still be changed.
				src.ServerName = v.TLSConfig.ServerName
				tc = src
			}
		}
		out = append(out, &pgconn.FallbackConfig{Host: v.Host, Port: v.Port, TLSConfig: tc})
	}
	return out
}

// tlsTemplate returns the TLS variants of the connection string's first
// network host, nil when every host is a Unix socket (pgconn gives a
// socket no TLS, whatever sslmode says: its variants say nothing of what
// the user asked of the network).
func (cfg *Config) tlsTemplate() []*pgconn.FallbackConfig {
	if n := cfg.templateNode(); !strings.HasPrefix(n.Host, "/") {
		return n.tls
	}
	return nil
}

// templateNode returns the connection string's first network host, whose
// TLS settings discovered nodes take (see nodeTLS), else its first host.
func (cfg *Config) templateNode() NodeConfig {
	for _, n := range cfg.Nodes {
		if !strings.HasPrefix(n.Host, "/") {
			return n
		}
	}
	return cfg.Nodes[0]
}

// checkTLSUnchanged refuses a PoolConfig whose TLS settings were changed
// after ParseConfig in a way nodeTLS cannot carry to the nodes: a host
// given TLS where the connection string gave it none (or the other way
// round). Each node's pool takes its TLS variants from the connection
// string's (a TLSConfig replaced by another one is used, as is one
// changed in place), so such a change would be lost, and with it the
// protection of the password the user asked for.
func (cfg *Config) checkTLSUnchanged() error {
	cc := &cfg.PoolConfig.ConnConfig.Config
	all := append([]*pgconn.FallbackConfig{{Host: cc.Host, Port: cc.Port, TLSConfig: cc.TLSConfig}}, cc.Fallbacks...)
	has := func(host string, port uint16, withTLS bool) bool {
		for _, e := range all {
			if e.Host == host && e.Port == port && (e.TLSConfig != nil) == withTLS {
				return true
			}
		}
		return false
	}
	for _, n := range cfg.Nodes {
		for _, v := range n.tls {
			if !has(v.Host, v.Port, v.TLSConfig != nil) {
				return fmt.Errorf("hasql: PoolConfig.ConnConfig: host %s: the connection string gives it %s, TLSConfig and Fallbacks no longer do: "+
					"TLS is set by the connection string (sslmode, sslrootcert, sslcert, sslkey), or per node by ConfigureNode",
					n.Addr, tlsWord(v.TLSConfig != nil))
			}
		}
	}
	for _, e := range all {
		for _, n := range cfg.Nodes {
			if n.Host != e.Host || n.Port != e.Port {
				continue
			}
			if !slices.ContainsFunc(n.tls, func(v *pgconn.FallbackConfig) bool { return (v.TLSConfig != nil) == (e.TLSConfig != nil) }) {
				return fmt.Errorf("hasql: PoolConfig.ConnConfig: host %s: TLSConfig or Fallbacks give it %s, the connection string does not: "+
					"TLS is set by the connection string (sslmode, sslrootcert, sslcert, sslkey), or per node by ConfigureNode",
					n.Addr, tlsWord(e.TLSConfig != nil))
			}
		}
	}
	return nil
}

// tlsWord names a TLS variant in checkTLSUnchanged's errors.
func tlsWord(withTLS bool) string {
	if withTLS {
		return "a TLS connection"
	}
	return "a connection without TLS"
}

// checkDiscoveryHosts refuses discovery when the connection string has no
// network host: the TLS settings of discovered nodes are taken from one
// (see discoveredTLS), and a Unix socket's (none) would send every
// discovered node the password in plain text whatever sslmode says.
func (cfg *Config) checkDiscoveryHosts() error {
	if cfg.Discoverer == nil || cfg.tlsTemplate() != nil {
		return nil
	}
	return fmt.Errorf("hasql: discovery (%s) needs a network host in the connection string, whose TLS settings discovered nodes get: every host is a Unix socket (%s)", cfg.Discoverer, addrList(cfg.Nodes))
}

// discoveredTLS returns the TLS variants of a discovered node at host and
// port: the connection string's first network host's (see tlsTemplate),
// verifying the server's certificate against the name serverName gives.
func (cfg *Config) discoveredTLS(host string, port uint16) []*pgconn.FallbackConfig {
	var out []*pgconn.FallbackConfig
	for _, tmpl := range cfg.tlsTemplate() {
		fb := &pgconn.FallbackConfig{Host: host, Port: port}
		if tmpl.TLSConfig != nil {
			tc := tmpl.TLSConfig.Clone()
			if tc.ServerName != "" {
				tc.ServerName = cfg.serverName(host, tc.ServerName)
			}
			fb.TLSConfig = tc
		}
		out = append(out, fb)
	}
	if len(out) == 0 {
		out = []*pgconn.FallbackConfig{{Host: host, Port: port}}
	}
	return out
}

// serverName returns the name a discovered host's certificate must hold
// (with sslmode=verify-full; with other modes it is the SNI name only):
// the host itself when the connection string names it or TLSServerNames
// allows it, else dsnName, the connection string's. A discovery source
// (a DNS answer, Patroni's member list) must not choose the name it is
// checked against: a rogue with a certificate for any name the CA signed
// would pass.
func (cfg *Config) serverName(host, dsnName string) string {
	if net.ParseIP(host) != nil {
		return dsnName
	}
	for _, n := range cfg.Nodes {
		if strings.EqualFold(n.Host, host) {
			return host
		}
	}
	if nameAllowed(cfg.TLSServerNames, host) {
		return host
	}
	return dsnName
}

// nameAllowed reports whether host is one of names, or ends with one of
// them that starts with a dot.
func nameAllowed(names []string, host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, n := range names {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if n == "" {
			continue
		}
		if strings.HasPrefix(n, ".") {
			if strings.HasSuffix(host, n) && len(host) > len(n) {
				return true
			}
		} else if host == n {
			return true
		}
	}
	return false
}

// parseServerNames reads hasql_tls_server_names: names and .suffixes,
// separated by commas.
func parseServerNames(v string) ([]string, error) {
	var out []string
	for _, n := range strings.Split(v, ",") {
		n = strings.TrimSpace(n)
		if n == "" || n == "." || strings.ContainsAny(n, " /:@*") {
			return nil, fmt.Errorf("hasql: hasql_tls_server_names %q: want host names or .domain suffixes, separated by commas", v)
		}
		out = append(out, n)
	}
	return out, nil
}

// verifyFull reports whether every TLS variant of the connection string's
// first host, the one discovered nodes copy, verifies the server's name
// (sslmode=verify-full): no plain variant, no skipped verification.
func (cfg *Config) verifyFull() bool {
	tmpl := cfg.tlsTemplate()
	if len(tmpl) == 0 {
		return false
	}
	for _, v := range tmpl {
		tc := v.TLSConfig
		if tc == nil || tc.InsecureSkipVerify || tc.ServerName == "" {
			return false
		}
	}
	return true
}

// checkPatroniTLS refuses Patroni discovery over http:// when the
// connection string asks for verify-full: whoever answers on a plain API
// chooses the nodes, and verify-full would protect the password from every
// one of them but the API's answer itself.
func (cfg *Config) checkPatroniTLS() error {
	if err := cfg.checkDiscoveryHosts(); err != nil {
		return err
	}
	p, ok := cfg.Discoverer.(*discovery.Patroni)
	if !ok || !cfg.verifyFull() {
		return nil
	}
	for _, u := range p.Config().URLs {
		if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(u)), "https://") {
			return fmt.Errorf("hasql: sslmode=verify-full with Patroni discovery needs https:// REST API URLs (%s): %s has an http one", discovery.SettingURLs, p)
		}
	}
	return nil
}

// warnUnprotectedDiscovery logs, once per Manager, that discovery runs
// with settings under which any node it reports gets the password: a node
// that asks for it in clear text (AuthenticationCleartextPassword) is sent
// it unless channel binding is required or the server's certificate is
// verified against a name the user chose.
func (m *Manager) warnUnprotectedDiscovery() {
	cfg := m.cfg
	if cfg.Discoverer == nil || cfg.verifyFull() || channelBindingRequired(&cfg.PoolConfig.ConnConfig.Config) {
		return
	}
	m.log.Warn("pgxha: discovery runs without channel_binding=require or sslmode=verify-full: any node it reports, a rogue one included, can ask for the password in clear text and get it (see docs/security.md)",
		"source", fmt.Sprint(cfg.Discoverer))
}

// checkDiscoveredHost refuses a discovered host that names a Unix socket
// directory, unless the connection string names it too: a discovery
// source may name servers on the network, not sockets of this machine,
// where any local user can listen.
func (cfg *Config) checkDiscoveredHost(host string) error {
	if host != "" && !strings.ContainsAny(host, "/\\") && !strings.HasPrefix(host, "@") {
		return nil
	}
	for _, n := range cfg.Nodes {
		if n.Host == host {
			return nil
		}
	}
	return fmt.Errorf("hasql: discovered host %q: want a host name or address, not a socket path", host)
}
