package hasql_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
)

// patroniMember is one member of a fake Patroni's /cluster answer.
type patroniMember struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	State  string `json:"state"`
	Host   string `json:"host"`
	Port   int    `json:"port"`
	APIURL string `json:"api_url,omitempty"`
}

// fakePatroni serves /cluster with members, over TLS when tlsOn: a lying
// Patroni REST API.
func fakePatroni(t *testing.T, tlsOn bool, members ...patroniMember) *httptest.Server {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"members": members})
	})
	var srv *httptest.Server
	if tlsOn {
		srv = httptest.NewTLSServer(h)
	} else {
		srv = httptest.NewServer(h)
	}
	t.Cleanup(srv.Close)
	return srv
}

// closedPort returns a loopback TCP port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// lookupLoopback resolves names (the test's own, such as db1.internal) to
// 127.0.0.1, and the rest as the system does.
func lookupLoopback(names ...string) func(context.Context, string) ([]string, error) {
	return func(ctx context.Context, host string) ([]string, error) {
		for _, n := range names {
			if strings.EqualFold(host, n) {
				return []string{"127.0.0.1"}, nil
			}
		}
		return net.DefaultResolver.LookupHost(ctx, host)
	}
}

// TestVerifyFullDiscoveredName: the connection string names db1.internal
// with sslmode=verify-full; a lying Patroni reports a member at
// "localhost", where a rogue holds a certificate for localhost from the
// same CA. The rogue's certificate is checked against db1.internal, the
// name the user chose, so the TLS handshake fails and it never gets the
// password; only when the user allows the name (hasql_tls_server_names)
// is it verified as itself.
func TestVerifyFullDiscoveredName(t *testing.T) {
	ca := newTestCA(t)
	rogueCert, rogueKey := ca.issue(t, "localhost", []string{"localhost"})
	kp, err := tls.X509KeyPair(rogueCert, rogueKey)
	require.NoError(t, err)
	files := writeFiles(t, map[string][]byte{"ca.crt": ca.certPEM})

	for _, tc := range []struct {
		name     string
		extra    string
		wantPass bool
	}{
		{name: "name chosen by discovery", wantPass: false},
		{name: "name the user allows", extra: "&hasql_tls_server_names=.example.org,localhost", wantPass: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rogue := newRoguePG(t, "tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{kp}})
			dsnPort := closedPort(t)
			api := fakePatroni(t, true,
				patroniMember{Name: "db1", Role: "leader", State: "running", Host: "db1.internal", Port: dsnPort},
				patroniMember{Name: "rogue", Role: "replica", State: "streaming", Host: "localhost", Port: rogue.Port()})

			cfg, err := hasql.ParseConfig(fmt.Sprintf(
				"postgres://app:s3cret-pw@db1.internal:%d/app?sslmode=verify-full&sslrootcert=%s&hasql_check_interval=50ms%s",
				dsnPort, url.QueryEscape(files["ca.crt"]), tc.extra))
			require.NoError(t, err)
			cfg.PoolConfig.ConnConfig.LookupFunc = lookupLoopback("db1.internal")
			cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			cfg.Discoverer, err = discovery.NewPatroni(discovery.PatroniConfig{URLs: []string{api.URL}, Client: api.Client()})
			require.NoError(t, err)
			m, err := hasql.NewWithConfig(ctx, cfg)
			require.NoError(t, err)
			defer m.Close()

			if tc.wantPass {
				rogue.waitFor(t, 30*time.Second, "a password", func(_, _, pw int) bool { return pw > 0 })
				assert.Equal(t, "s3cret-pw", rogue.Passwords()[0])
				return
			}
			// Two handshakes: the first connection attempt is over.
			rogue.waitFor(t, 30*time.Second, "two TLS handshakes", func(hs, _, _ int) bool { return hs >= 2 })
			assert.Empty(t, rogue.Passwords(), "the rogue got the password")
		})
	}
}

// TestVerifyFullPatroniNeedsHTTPS: with sslmode=verify-full, Patroni
// discovery over plain http is refused (whoever answers chooses the
// nodes); https passes, and so does http without verify-full.
func TestVerifyFullPatroniNeedsHTTPS(t *testing.T) {
	for _, tc := range []struct {
		dsn     string
		wantErr bool
	}{
		{"postgres://u:pw@db1.internal/app?sslmode=verify-full&hasql_discovery=patroni", true},
		{"postgres://u:pw@db1.internal/app?sslmode=verify-full&hasql_discovery=patroni&hasql_discovery_urls=http://db1.internal:8008", true},
		{"postgres://u:pw@db1.internal/app?sslmode=verify-full&hasql_discovery=patroni&hasql_discovery_urls=https://db1.internal:8008,http://db2.internal:8008", true},
		{"postgres://u:pw@db1.internal/app?sslmode=verify-full&hasql_discovery=patroni&hasql_discovery_urls=https://db1.internal:8008", false},
		{"postgres://u:pw@db1.internal/app?sslmode=require&hasql_discovery=patroni", false},
	} {
		_, err := hasql.ParseConfig(tc.dsn)
		if tc.wantErr {
			require.Error(t, err, tc.dsn)
			assert.Contains(t, err.Error(), "https", tc.dsn)
			assert.NotContains(t, err.Error(), "pw@", tc.dsn)
		} else {
			assert.NoError(t, err, tc.dsn)
		}
	}
	// The same rule for a Discoverer given in code.
	cfg, err := hasql.ParseConfig("postgres://u:pw@db1.internal/app?sslmode=verify-full")
	require.NoError(t, err)
	cfg.Discoverer, err = discovery.NewPatroni(discovery.PatroniConfig{URLs: []string{"http://db1.internal:8008"}})
	require.NoError(t, err)
	_, err = hasql.NewWithConfig(context.Background(), cfg)
	require.ErrorContains(t, err, "https")
}

// TestDiscoveryWarnsWithoutChannelBinding: discovery with settings under
// which any node it reports gets the password logs one warning per
// Manager; channel_binding=require or verify-full silences it.
func TestDiscoveryWarnsWithoutChannelBinding(t *testing.T) {
	port := closedPort(t)
	for _, tc := range []struct {
		query string
		warn  bool
	}{
		{"sslmode=disable", true},
		{"sslmode=prefer", true},
		{"sslmode=require", true},
		{"sslmode=require&channel_binding=require", false},
	} {
		t.Run(tc.query, func(t *testing.T) {
			var logs syncBuffer
			cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/app?%s&hasql_check_timeout=50ms", port, tc.query))
			require.NoError(t, err)
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			cfg.Discoverer = newSetDiscoverer(discovery.Node{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
			m, err := hasql.NewWithConfig(context.Background(), cfg)
			require.NoError(t, err)
			m.Close()
			n := strings.Count(logs.String(), "discovery runs without channel_binding=require or sslmode=verify-full")
			if tc.warn {
				assert.Equal(t, 1, n, "one warning:\n%s", logs.String())
				assert.NotContains(t, logs.String(), ":pw@")
			} else {
				assert.Zero(t, n, logs.String())
			}
		})
	}
}

// TestDiscoveredSocketPathRefused: a discovered host that is a path would
// be a Unix socket of this machine, where a local rogue listens and asks
// for the password in clear text. It is left out of the node set.
func TestDiscoveredSocketPathRefused(t *testing.T) {
	dir := t.TempDir()
	rogue := newRoguePG(t, "unix", dir+"/.s.PGSQL.5432", nil)
	port := closedPort(t)
	var logs syncBuffer
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:s3cret-pw@127.0.0.1:%d/app?sslmode=disable&hasql_check_interval=50ms", port))
	require.NoError(t, err)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	d := newSetDiscoverer(discovery.Node{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	cfg.Discoverer = d
	m, err := hasql.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	defer m.Close()
	d.set(discovery.Node{Addr: fmt.Sprintf("127.0.0.1:%d", port)}, discovery.Node{Addr: dir + ":5432"})
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "not a socket path") }, time.Minute, 5*time.Millisecond,
		"the socket path is refused:\n%s", logs.String())
	assert.NotContains(t, addrsOf(m), dir+":5432")
	assert.Empty(t, rogue.Passwords())
}

// TestPasswordNeverInParseErrors: passwords with '/', '#', '?' or '@'
// written unencoded in a URL, where libpq would read part of them as a
// host, a port or the database name. No error, nor any error its chain
// unwraps to, shows any part of the password; Redact hides it as written,
// decoded and encoded.
func TestPasswordNeverInParseErrors(t *testing.T) {
	for _, tc := range []struct {
		dsn    string
		secret []string // parts of the password that must not show
		ok     bool     // parses, with the password whole
		pw     string
	}{
		{dsn: "postgres://app:AbC/dEf+gh@db1:5432/app", secret: []string{"AbC", "dEf+gh"}},
		{dsn: "postgres://app:12345/Zq9xW@db1/app", secret: []string{"Zq9xW"}},
		{dsn: "postgres://app:pa#ss@db1:5432/app", ok: true, pw: "pa#ss"},
		{dsn: "postgres://app:p?s#s@db1:5432/app", ok: true, pw: "p?s#s"},
		{dsn: "postgres://app:Tk9@Qw@db1/app", secret: []string{"Tk9", "Qw"}},
		{dsn: "postgres://app:a?b/Wx7q@db1/app?x=y", secret: []string{"Wx7q"}},
		{dsn: "postgres://app:Rt5%40Yu@db1:99999/app", secret: []string{"Rt5%40Yu", "Rt5@Yu"}},
		// The error quotes the value, which is the password: redacted in
		// the error and in the one it wraps.
		{dsn: "postgres://app:Pq8Zr@db1/app?hasql_check_interval=Pq8Zr", secret: []string{"Pq8Zr"}},
		// A Patroni URL's password with an unencoded '/'.
		{dsn: "postgres://app@db1/app?hasql_discovery=patroni&hasql_discovery_urls=http://admin:Pa55/w0rd@10.0.0.1:8008", secret: []string{"Pa55", "w0rd"}},
	} {
		t.Run(tc.dsn, func(t *testing.T) {
			cfg, err := hasql.ParseConfig(tc.dsn)
			if tc.ok {
				require.NoError(t, err)
				assert.Equal(t, tc.pw, cfg.PoolConfig.ConnConfig.Password)
				assert.Equal(t, "db1", cfg.Nodes[0].Host)
				assert.Equal(t, "app", cfg.PoolConfig.ConnConfig.Database)
				return
			}
			require.Error(t, err)
			for e := error(err); e != nil; e = errors.Unwrap(e) {
				for _, s := range tc.secret {
					assert.NotContains(t, e.Error(), s, "%T in the chain", e)
				}
			}
		})
	}
	// Redact: the password as written (percent-encoded) and decoded.
	dsn := "postgres://app:Rt5%40Yu@db1/app"
	assert.Equal(t, "a xxxxx b xxxxx", hasql.Redact(dsn, "a Rt5%40Yu b Rt5@Yu"))
	// A URL in the text: everything up to the last '@'.
	assert.Equal(t, "dial postgres://app:xxxxx@db1/app failed",
		hasql.Redact("", "dial postgres://app:AbC/dEf+gh@db1/app failed"))
}

// TestMaxNodes: a discovered set over MaxNodes (hasql_max_nodes) is
// refused whole, whatever the Discoverer: no node, no pool, no goroutine
// for any of it; the node set stays as it was.
func TestMaxNodes(t *testing.T) {
	port := closedPort(t)
	var logs syncBuffer
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/app?sslmode=disable&hasql_max_nodes=10", port))
	require.NoError(t, err)
	assert.Equal(t, 10, cfg.MaxNodes)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	d := newSetDiscoverer(discovery.Node{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	cfg.Discoverer = d
	m, err := hasql.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	defer m.Close()
	var flood []discovery.Node
	for i := range 4000 {
		flood = append(flood, discovery.Node{Addr: fmt.Sprintf("127.%d.%d.1:5432", i>>8&255, i&255)})
	}
	d.set(flood...)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "over MaxNodes 10") }, time.Minute, 5*time.Millisecond, logs.String())
	assert.Equal(t, []string{fmt.Sprintf("127.0.0.1:%d", port)}, addrsOf(m))

	for _, v := range []string{"0", "-1", "many"} {
		_, err := hasql.ParseConfig("postgres://u@h/db?hasql_max_nodes=" + v)
		assert.ErrorContains(t, err, "hasql_max_nodes", v)
	}
	_, err = hasql.ParseConfig("postgres://u@h/db?hasql_discovery=dns&hasql_discovery_max_nodes=0")
	assert.ErrorContains(t, err, "hasql_discovery_max_nodes")
}
