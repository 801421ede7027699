package hasql_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
)

// TestTLSConfigGivenAfterParseConfigIsRefused: a TLS configuration set on
// Config.PoolConfig.ConnConfig after ParseConfig (the way one sets TLS on a
// pgxpool.Config) for a host the connection string gives none must not be
// dropped: each node takes its TLS variants from the connection string,
// so the node would connect without TLS and give a server that asks for
// the password in clear text what pgx alone, with the same ConnConfig,
// never sends. NewWithConfig refuses it, naming the host.
func TestTLSConfigGivenAfterParseConfigIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rogue := newRoguePG(t, "tcp", "127.0.0.1:0", nil)
	addr := fmt.Sprintf("127.0.0.1:%d", rogue.Port())
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:s3cret-pw@%s/app?sslmode=disable&hasql_check_interval=50ms", addr))
	require.NoError(t, err)
	cfg.PoolConfig.ConnConfig.TLSConfig = &tls.Config{ServerName: "db1.internal", RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	cfg.Logger = quiet
	m, err := hasql.NewWithConfig(ctx, cfg)
	if m != nil {
		m.Close()
	}
	require.Error(t, err)
	assert.Contains(t, err.Error(), addr)
	assert.Contains(t, err.Error(), "TLS")
	assert.NotContains(t, err.Error(), "s3cret-pw")
	assert.Empty(t, rogue.Passwords(), "the password was sent without the TLS the configuration asked for")

	// The other way round: TLS taken away from a host the connection
	// string gives it.
	cfg, err = hasql.ParseConfig(fmt.Sprintf("postgres://app:s3cret-pw@%s/app?sslmode=require", addr))
	require.NoError(t, err)
	cfg.PoolConfig.ConnConfig.TLSConfig = nil
	cfg.Logger = quiet
	m, err = hasql.NewWithConfig(ctx, cfg)
	if m != nil {
		m.Close()
	}
	require.Error(t, err)
	assert.Contains(t, err.Error(), addr)
}

// TestNodeConfigNotFromParseConfigIsRefused: a NodeConfig appended to
// Config.Nodes by hand has none of the TLS settings ParseConfig records:
// NewWithConfig refuses it with an error naming it, never a panic.
func TestNodeConfigNotFromParseConfigIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/app?sslmode=disable", closedPort(t)))
	require.NoError(t, err)
	cfg.Logger = quiet
	added := fmt.Sprintf("127.0.0.1:%d", closedPort(t))
	cfg.Nodes = append(cfg.Nodes, hasql.NodeConfig{Addr: added, Host: "127.0.0.1", Port: 1, Weight: 1})
	var m *hasql.Manager
	require.NotPanics(t, func() { m, err = hasql.NewWithConfig(ctx, cfg) })
	if m != nil {
		m.Close()
	}
	require.Error(t, err)
	assert.Contains(t, err.Error(), added)
}

// TestDiscoveredNodesGetTheClientCertificateWithASocketFirst: a discovered
// node takes the TLS settings of the connection string's first network
// host, its client certificate (sslcert, sslkey) included, also when a
// Unix socket directory is listed before that host.
func TestDiscoveredNodesGetTheClientCertificateWithASocketFirst(t *testing.T) {
	ca := newTestCA(t)
	srvCert, srvKey := ca.issue(t, "db1.internal", []string{"db1.internal"})
	cliCert, cliKey := ca.issue(t, "app", nil)
	files := writeFiles(t, map[string][]byte{"ca.crt": ca.certPEM, "client.crt": cliCert, "client.key": cliKey})
	kp, err := tls.X509KeyPair(srvCert, srvKey)
	require.NoError(t, err)

	for _, tc := range []struct{ name, hosts string }{
		{"network host first", "db1.internal"},
		{"socket directory first", t.TempDir() + ",db1.internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var withCert, without atomic.Int64
			srvTLS := &tls.Config{Certificates: []tls.Certificate{kp}, ClientAuth: tls.RequestClientCert,
				VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
					if len(raw) > 0 {
						withCert.Add(1)
					} else {
						without.Add(1)
					}
					return nil
				}}
			rogue := newRoguePG(t, "tcp", "127.0.0.1:0", srvTLS)
			ports := strconv.Itoa(closedPort(t))
			if tc.hosts != "db1.internal" {
				ports += "," + ports
			}
			cfg, err := hasql.ParseConfig(fmt.Sprintf(
				"host=%s port=%s user=app password=s3cret-pw dbname=app sslmode=verify-full sslrootcert=%s sslcert=%s sslkey=%s hasql_check_interval=50ms hasql_tls_server_names=localhost",
				tc.hosts, ports, files["ca.crt"], files["client.crt"], files["client.key"]))
			require.NoError(t, err)
			cfg.PoolConfig.ConnConfig.LookupFunc = lookupLoopback("db1.internal")
			cfg.Logger = quiet
			cfg.Discoverer = newSetDiscoverer(discovery.Node{Addr: "127.0.0.1:" + strconv.Itoa(rogue.Port())})
			m, err := hasql.NewWithConfig(ctx, cfg)
			require.NoError(t, err)
			defer m.Close()
			rogue.waitFor(t, 30*time.Second, "two TLS handshakes", func(hs, _, _ int) bool { return hs >= 2 })
			m.Close()
			assert.NotZero(t, withCert.Load(), "no handshake presented the client certificate")
			assert.Zero(t, without.Load(), "the discovered node was not presented the client certificate")
		})
	}
}
