package failover

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/testcluster"
)

// Statements PostgreSQL 15 commits on, inside a transaction
// block, that txEffect reads as keeping the transaction.
func TestEndsTxAtomicBodies(t *testing.T) {
	for _, sql := range []string{
		// An empty BEGIN ATOMIC body (routine_body_stmt_list may be empty):
		// END is the token right after ATOMIC, not at a statement's start,
		// so the body is never closed and the COMMIT after it is taken for
		// a statement of the body.
		"CREATE FUNCTION app_f3() RETURNS void LANGUAGE sql BEGIN ATOMIC END; COMMIT",
		"CREATE PROCEDURE app_p3() LANGUAGE sql BEGIN ATOMIC END; COMMIT",
		// begin and atomic are unreserved: a table named begin with a
		// column named atomic; '(' is skipped as a blank, so prevBegin
		// survives it and a body is counted in a CREATE TABLE.
		"CREATE TABLE begin (atomic int); COMMIT",
	} {
		if got := txEffect(sql); got != mayCommit {
			t.Errorf("txEffect(%q) = %v, want mayCommit (PostgreSQL 15 commits)", sql, got)
		}
		if endsTx(sql) != true {
			t.Errorf("endsTx(%q) = false", sql)
		}
	}
}

// The same cases against PostgreSQL itself.
func TestEndsTxAtomicBodiesLive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 0})
	conn, err := c.Nodes()[0].Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var ver string
	require.NoError(t, conn.QueryRow(ctx, "SHOW server_version").Scan(&ver))
	t.Logf("server_version %s", ver)
	for _, sql := range []string{
		"CREATE FUNCTION app_f3() RETURNS void LANGUAGE sql BEGIN ATOMIC END; COMMIT",
		"CREATE PROCEDURE app_p3() LANGUAGE sql BEGIN ATOMIC END; COMMIT",
		"CREATE TABLE begin (atomic int); COMMIT",
	} {
		_, err := conn.Exec(ctx, "BEGIN")
		require.NoError(t, err)
		_, err = conn.Exec(ctx, sql)
		st := conn.PgConn().TxStatus()
		t.Logf("%q: err=%v status after %c; txEffect %v", sql, err, st, txEffect(sql))
		if st == 'I' && txEffect(sql) != mayCommit {
			t.Errorf("MISS: PostgreSQL ended (committed) the transaction on %q; txEffect says %v", sql, txEffect(sql))
		}
		if st != 'I' {
			_, _ = conn.Exec(ctx, "ROLLBACK")
		}
	}
}
