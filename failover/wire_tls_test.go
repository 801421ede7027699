package failover_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// selfSignedTLS makes a server certificate for 127.0.0.1 and localhost
// (clients with sslmode=require do not verify it).
func selfSignedTLS(t *testing.T) *testcluster.ServerTLS {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return &testcluster.ServerTLS{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
}

// oneNodeManager starts a cluster of one node, serving TLS when tls is set,
// and a Manager whose connections then require it (plain otherwise),
// after running setup on the master. It returns the DSN too.
func oneNodeManager(t *testing.T, ctx context.Context, tls bool, setup ...string) (*hasql.Manager, string) {
	t.Helper()
	opts := testcluster.Options{Replicas: 0}
	if tls {
		opts.ServerTLS = selfSignedTLS(t)
	}
	c := testcluster.New(t, opts)
	dsn := c.DSN()
	if tls {
		dsn = strings.Replace(dsn, "sslmode=disable", "sslmode=require", 1)
		require.NotEqual(t, c.DSN(), dsn)
	}
	return preparedManagerAt(t, ctx, dsn, 0, nil, nil, setup...), dsn
}

// insertThen runs fn in RunInTx with opts: fn checks that its connection
// is TLS exactly when tls is set, inserts note into table's note column,
// then runs body, which is told which run of fn it is. It returns how many
// times fn ran and RunInTx's error.
func insertThen(t *testing.T, ctx context.Context, m *hasql.Manager, opts failover.Options, tls bool, table, note string,
	body func(ctx context.Context, tx pgx.Tx, runs int) error) (runs int, err error) {
	t.Helper()
	err = failover.RunInTx(ctx, m, opts, func(ctx context.Context, tx pgx.Tx) error {
		runs++
		var ssl bool
		if err := tx.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
			return err
		}
		require.Equal(t, tls, ssl, "TLS on fn's connection")
		if _, err := tx.Exec(ctx, "INSERT INTO "+table+" (note) VALUES ($1)", note); err != nil {
			return err
		}
		return body(ctx, tx, runs)
	})
	t.Logf("RunInTx: %v; runs %d; rows committed %d", err, runs, countNote(t, ctx, m, table, note))
	return runs, err
}

// countNote counts the rows of table with note.
func countNote(t *testing.T, ctx context.Context, m *hasql.Manager, table, note string) int {
	t.Helper()
	var k int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE note = $1", note).Scan(&k))
	return k
}

// Under TLS the messages pgconn's ExecBatch writes past the frontend are
// records that cannot be read: RunInTx takes such a write for a possible
// COMMIT, unless pgx's tracer read it (pgx's own batches); TLS's close
// alert, written when a FATAL error closes the connection, is not one.
func TestRunInTxReadsWhatIsSentUnderTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	m, dsn := oneNodeManager(t, ctx, true, "CREATE TABLE tls_t (n serial PRIMARY KEY, note text)")
	exec := preparedManagerAt(t, ctx, dsn+"&default_query_exec_mode=exec", 0, nil, nil)
	count := func(t *testing.T, note string) int { return countNote(t, ctx, m, "tls_t", note) }
	// run runs fn's insert then body in RunInTx.
	run := func(t *testing.T, mm *hasql.Manager, note string, body func(ctx context.Context, tx pgx.Tx, runs int) error) (runs int, err error) {
		return insertThen(t, ctx, mm, failover.Options{MaxAttempts: 3}, true, "tls_t", note, body)
	}

	t.Run("PgConn ExecBatch COMMIT AND CHAIN then 40001", func(t *testing.T) {
		runs, _ := run(t, m, "batch-chain", func(ctx context.Context, tx pgx.Tx, runs int) error {
			if runs > 1 {
				return nil
			}
			b := &pgconn.Batch{}
			b.ExecParams("COMMIT AND CHAIN", nil, nil, nil, nil)
			if _, err := tx.Conn().PgConn().ExecBatch(ctx, b).ReadAll(); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, raise40001)
			return err
		})
		assert.Equal(t, 1, runs, "fn ran again after its work committed")
		assert.Equal(t, 1, count(t, "batch-chain"), "fn's write committed twice")
	})
	// pgx's batches in the exec mode go out through ExecBatch: read by
	// the tracer, they keep the retry.
	t.Run("pgx batch in exec mode then 40001 is retried", func(t *testing.T) {
		runs, err := run(t, exec, "pgx-batch", func(ctx context.Context, tx pgx.Tx, runs int) error {
			b := &pgx.Batch{}
			b.Queue("SELECT 1")
			b.Queue("SELECT $1::text", "COMMIT")
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				return err
			}
			if runs == 1 {
				_, err := tx.Exec(ctx, raise40001)
				return err
			}
			return nil
		})
		require.NoError(t, err)
		assert.Equal(t, 2, runs)
		assert.Equal(t, 1, count(t, "pgx-batch"))
	})
	// The backend is terminated (FATAL 57P01) before any COMMIT: pgconn
	// closes the connection without a Terminate, and TLS writes its
	// close alert past the frontend; fn runs again.
	t.Run("backend terminated before COMMIT is retried", func(t *testing.T) {
		runs, err := run(t, m, "terminated", func(ctx context.Context, tx pgx.Tx, runs int) error {
			if runs == 1 {
				_, err := tx.Exec(ctx, "SELECT pg_terminate_backend(pg_backend_pid())")
				return err
			}
			return nil
		})
		require.NoError(t, err)
		assert.Equal(t, 2, runs)
		assert.Equal(t, 1, count(t, "terminated"))
	})
	// What the frontend writes is read under TLS as without.
	t.Run("PgConn ExecParams read then 40001 is retried", func(t *testing.T) {
		runs, err := run(t, m, "params-read", func(ctx context.Context, tx pgx.Tx, runs int) error {
			if _, err := tx.Conn().PgConn().ExecParams(ctx, "SELECT 'COMMIT'", nil, nil, nil, nil).Close(); err != nil {
				return err
			}
			if runs == 1 {
				_, err := tx.Exec(ctx, raise40001)
				return err
			}
			return nil
		})
		require.NoError(t, err)
		assert.Equal(t, 2, runs)
		assert.Equal(t, 1, count(t, "params-read"))
	})
}
