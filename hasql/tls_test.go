package hasql_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pgxha test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate and key (PEM) for cn, valid for the given
// names and addresses, for servers and clients alike.
func (ca *testCA) issue(t *testing.T, cn string, names []string, ips ...net.IP) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     names,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// writeFiles writes each PEM to a file of its name in a new temporary
// directory (mode 0600) and returns the paths.
func writeFiles(t *testing.T, files map[string][]byte) map[string]string {
	t.Helper()
	dir := t.TempDir()
	paths := map[string]string{}
	for name, b := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		paths[name] = p
	}
	return paths
}

// withQuery returns dsn with its query parameters set to q's.
func withQuery(t *testing.T, dsn string, q url.Values) string {
	t.Helper()
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	v := u.Query()
	for k := range q {
		v.Set(k, q.Get(k))
	}
	u.RawQuery = v.Encode()
	return u.String()
}

// withHosts returns dsn naming hosts instead of its own.
func withHosts(t *testing.T, dsn string, hosts ...string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	u.Host = strings.Join(hosts, ",")
	return u.String()
}

func mustStatic(t *testing.T, nodes ...discovery.Node) *discovery.Static {
	t.Helper()
	d, err := discovery.NewStatic(nodes...)
	require.NoError(t, err)
	return d
}

// TestClientCertificate runs a Manager against a cluster whose pg_hba asks
// every TLS connection for a client certificate signed by the test's CA
// (clientcert=verify-full: its CN must be the user). The connection string
// names the certificate with sslcert and sslkey, as for plain pgx: the
// check connections (WaitReady needs them), the pool's (the server's
// pg_stat_ssl shows the certificate's name) and DB's must present it, for
// the connection string's hosts and for discovered ones alike.
func TestClientCertificate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ca := newTestCA(t)
	srvCert, srvKey := ca.issue(t, "localhost", []string{"localhost"}, net.ParseIP("127.0.0.1"))
	cliCert, cliKey := ca.issue(t, "postgres", nil)
	files := writeFiles(t, map[string][]byte{"ca.crt": ca.certPEM, "client.crt": cliCert, "client.key": cliKey})

	c := testcluster.New(t, testcluster.Options{
		Replicas: 1, SyncReplicas: 1,
		ServerTLS: &testcluster.ServerTLS{CertPEM: srvCert, KeyPEM: srvKey, ClientCAPEM: ca.certPEM},
		HBA:       []string{"hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-full"},
	})
	tlsQuery := url.Values{
		"sslmode":     {"verify-full"},
		"sslrootcert": {files["ca.crt"]},
		"sslcert":     {files["client.crt"]},
		"sslkey":      {files["client.key"]},
	}
	nodes := c.Nodes()

	for _, tc := range []struct {
		name string
		dsn  string
		opts []hasql.Option
	}{
		{name: "hosts of the connection string", dsn: withQuery(t, c.DSN(), tlsQuery)},
		{
			// The connection string names the master; discovery adds the
			// replica, whose node is made from the first host's TLS settings.
			name: "discovered host",
			dsn:  withQuery(t, withHosts(t, c.DSN(), nodes[0].Addr()), tlsQuery),
			opts: []hasql.Option{hasql.WithDiscoverer(mustStatic(t,
				discovery.Node{Addr: nodes[0].Addr()}, discovery.Node{Addr: nodes[1].Addr()}))},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := hasql.New(ctx, tc.dsn, tc.opts...)
			require.NoError(t, err)
			defer m.Close()
			wctx, wcancel := context.WithTimeout(ctx, time.Minute)
			defer wcancel()
			require.NoError(t, m.WaitReady(wctx, 1, 1), "nodes: %+v", m.Nodes())

			conn, err := m.AcquireMaster(ctx)
			require.NoError(t, err)
			var dn string
			err = conn.QueryRow(ctx, "SELECT coalesce(client_dn, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&dn)
			conn.Release()
			require.NoError(t, err)
			require.Equal(t, "/CN=postgres", dn, "the pool's connection presents the client certificate")

			rconn, err := m.AcquireReplica(ctx)
			require.NoError(t, err)
			err = rconn.QueryRow(ctx, "SELECT coalesce(client_dn, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&dn)
			rconn.Release()
			require.NoError(t, err)
			require.Equal(t, "/CN=postgres", dn, "the replica's pool connection presents the client certificate")

			db := m.DB(hasql.TargetMaster)
			defer db.Close()
			require.NoError(t, db.QueryRowContext(ctx, "SELECT coalesce(client_dn, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&dn))
			require.Equal(t, "/CN=postgres", dn, "DB's connection presents the client certificate")
		})
	}
}

// TestDiscoveredTLSFromNetworkHost: a connection string whose first host
// is a Unix socket directory (pgconn gives it no TLS) with
// sslmode=verify-full: a discovered node gets the TLS settings of the
// first network host, so a discovered server without TLS never gets the
// password.
func TestDiscoveredTLSFromNetworkHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca := newTestCA(t)
	files := writeFiles(t, map[string][]byte{"ca.crt": ca.certPEM})
	rogue := newRoguePG(t, "tcp", "127.0.0.1:0", nil) // no TLS at all
	dsnPort := closedPort(t)
	cfg, err := hasql.ParseConfig(fmt.Sprintf(
		"host=%s,db1.internal port=%d,%d user=app password=s3cret-pw dbname=app sslmode=verify-full sslrootcert=%s hasql_check_interval=50ms",
		t.TempDir(), dsnPort, dsnPort, files["ca.crt"]))
	require.NoError(t, err)
	cfg.PoolConfig.ConnConfig.LookupFunc = lookupLoopback("db1.internal")
	cfg.Logger = quiet
	rogueAddr := "127.0.0.1:" + strconv.Itoa(rogue.Port())
	cfg.Discoverer = newSetDiscoverer(discovery.Node{Addr: rogueAddr})
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	require.Eventually(t, func() bool {
		for _, st := range m.Nodes() {
			if st.Addr == rogueAddr && st.LastError != nil {
				return true
			}
		}
		return false
	}, 30*time.Second, 10*time.Millisecond, "the discovered node was never checked: %v", m.Nodes())
	for _, st := range m.Nodes() {
		if st.Addr == rogueAddr {
			assert.ErrorContains(t, st.LastError, "TLS", "the check to the discovered node without TLS")
		}
	}
	assert.Empty(t, rogue.Passwords(), "with sslmode=verify-full the discovered node got the password in plain text")
}

// TestDiscoveryNeedsNetworkHost: discovery whose connection string names
// only Unix sockets has no TLS settings to give discovered nodes: refused.
// A socket first and a network host after: Patroni over http:// is
// refused under verify-full as it is when every host is a network one.
func TestDiscoveryNeedsNetworkHost(t *testing.T) {
	ca := newTestCA(t)
	files := writeFiles(t, map[string][]byte{"ca.crt": ca.certPEM})
	base := "host=%s port=5432 user=app dbname=app sslmode=verify-full sslrootcert=" + files["ca.crt"] +
		" hasql_discovery=patroni hasql_discovery_urls=%s"
	_, err := hasql.ParseConfig(fmt.Sprintf(base, "db1.internal,db2.internal", "http://db2.internal:8008"))
	require.ErrorContains(t, err, "https")
	_, err = hasql.ParseConfig(fmt.Sprintf(base, t.TempDir()+",db2.internal", "http://db2.internal:8008"))
	require.ErrorContains(t, err, "https", "verify-full with http Patroni when the first host is a socket directory")
	_, err = hasql.ParseConfig(fmt.Sprintf(base, t.TempDir(), "https://db2.internal:8008"))
	require.ErrorContains(t, err, "needs a network host")
	_, err = hasql.ParseConfig(fmt.Sprintf(base, t.TempDir()+",db2.internal", "https://db2.internal:8008"))
	require.NoError(t, err)
}
