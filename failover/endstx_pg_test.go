package failover

// endsTx against PostgreSQL 15's own lexer. Each case
// is sent, in an explicit transaction, on a direct connection; the
// transaction status the server reports afterwards says whether the
// statement ended the transaction ('I') or not ('T', or 'E' for one that
// failed). endsTx must say true whenever the server ended it (a miss lets
// RunInTx run fn again after a COMMIT it sent and lost); a false positive
// only costs a retry after a loss.

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/testcluster"
)

type lexCase struct {
	name  string
	setup []string // run first, inside the transaction
	sql   string
}

var lexCases = []lexCase{
	{name: "line comment ended by CR", sql: "SELECT 1; -- note\rCOMMIT"},
	{name: "E string continued on the next line", sql: "SELECT E'a'\n'\\''; COMMIT; --'"},
	{name: "standard_conforming_strings off", setup: []string{"SET LOCAL standard_conforming_strings = off"}, sql: "SELECT '\\'' ; COMMIT; --'"},
	{name: "vertical tab before COMMIT", sql: "SELECT 1;\vCOMMIT"},
	{name: "U& string", sql: "SELECT U&'\\0027'; COMMIT"},
	{name: "BEGIN ATOMIC function body (false positive)", sql: "CREATE FUNCTION app_f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END"},
	{name: "DO block COMMIT (in a tx block)", sql: "DO $$BEGIN COMMIT; END$$"},
	{name: "CALL procedure that COMMITs (in a tx block)", setup: []string{"CREATE PROCEDURE app_p() LANGUAGE plpgsql AS $$BEGIN COMMIT; END$$"}, sql: "CALL app_p()"},
	{name: "ROLLBACK AND CHAIN", sql: "ROLLBACK AND CHAIN"},
	{name: "COMMIT AND CHAIN", sql: "COMMIT AND CHAIN"},
}

func TestEndsTxAgreesWithPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 0})
	conn, err := c.Nodes()[0].Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var ver string
	require.NoError(t, conn.QueryRow(ctx, "SHOW server_version").Scan(&ver))
	t.Logf("server_version %s", ver)
	for _, tc := range lexCases {
		_, err := conn.Exec(ctx, "BEGIN")
		require.NoError(t, err)
		for _, s := range tc.setup {
			_, err := conn.Exec(ctx, s)
			require.NoError(t, err, s)
		}
		before := conn.PgConn().TxStatus()
		_, err = conn.Exec(ctx, tc.sql)
		st := conn.PgConn().TxStatus()
		serverEnded := before != 'I' && (st == 'I' || tc.sql == "COMMIT AND CHAIN" || tc.sql == "ROLLBACK AND CHAIN")
		lexer := endsTx(tc.sql)
		t.Logf("%-45s status %c -> %c err=%v: server ended tx %v, endsTx %v", tc.name, before, st, err, serverEnded, lexer)
		if serverEnded && !lexer {
			t.Errorf("MISS %s: PostgreSQL ended the transaction on %q, endsTx says false", tc.name, tc.sql)
		}
		if !serverEnded && lexer {
			t.Logf("false positive %s: %q", tc.name, tc.sql)
		}
		if st != 'I' {
			_, _ = conn.Exec(ctx, "ROLLBACK")
		}
	}
}

// The statements PostgreSQL 15 was seen to end a transaction with
// (TestEndsTxAgreesWithPostgres), without a server.
func TestEndsTxCatchesWhatPostgresCommits(t *testing.T) {
	for _, sql := range []string{
		"SELECT 1; -- note\rCOMMIT",       // a -- comment ends at \r too (scan.l: newline [\n\r])
		"SELECT E'a'\n'\\''; COMMIT; --'", // a continued E'' string keeps backslash escapes
		"SELECT '\\'' ; COMMIT; --'",      // after SET standard_conforming_strings = off
	} {
		if !endsTx(sql) {
			t.Errorf("endsTx(%q) = false; PostgreSQL 15 commits on it", sql)
		}
	}
}
