package failover

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/testcluster"
)

// endsTx against PostgreSQL 15's own lexer. Each case
// is sent, in an explicit transaction, on a direct connection; the
// transaction status the server reports afterwards says whether the
// statement ended the transaction ('I') or not ('T', or 'E' for one that
// failed). endsTx must say true whenever the server ended it (a miss lets
// RunInTx run fn again after a COMMIT it sent and lost); a false positive
// only costs a retry after a loss.

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
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
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
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
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

// txEffect against PostgreSQL 15 on statements built at random from the
// pieces its lexer treats specially: string literals of every kind (with
// and without standard_conforming_strings, continued over a newline),
// quoted identifiers, dollar quotes, nested and line comments ended by LF
// or CR, and the statements that end a transaction, with comments between
// their words. Each case inserts a mark in an explicit transaction, sends
// the statements in one simple-protocol query, and rolls back whatever is
// left: a mark still there afterwards was committed by the statements,
// and txEffect must then have said mayCommit (a miss lets RunInTx run fn
// again after a COMMIT it sent and lost).

var (
	lexRandomCases = flag.Int("lex.cases", 3000, "random statements TestTxEffectAgreesWithPostgres sends")
	lexRandomSeed  = flag.Uint64("lex.seed", 1, "seed of TestTxEffectAgreesWithPostgres's statements")
)

// lexGen builds statements for one standard_conforming_strings setting.
type lexGen struct {
	r  *rand.Rand
	sc bool // standard_conforming_strings
}

// text is a string's content: the bytes that fool a lexer reading the
// wrong way.
func (g *lexGen) text() string {
	pieces := []string{"a", ";", " COMMIT", " END ", ";COMMIT;", "\\", "''", "'", "\"", "$$", "$a$", "--", "/*", "*/", "\n", "\r", " ", "E'", "U&"}
	var b strings.Builder
	for n := g.r.IntN(6); n > 0; n-- {
		b.WriteString(pieces[g.r.IntN(len(pieces))])
	}
	return b.String()
}

// literal returns a string literal PostgreSQL accepts whose content is s,
// in one of the forms the lexer knows.
func (g *lexGen) literal(s string) string {
	switch g.r.IntN(8) {
	case 7: // E'' continued: the continuation escapes as E'' does
		cut := g.r.IntN(len(s) + 1)
		esc := strings.NewReplacer("\\", "\\\\", "'", "\\'")
		return "E'" + esc.Replace(s[:cut]) + "'" + []string{"\n", " \r ", "\n-- c ' \n"}[g.r.IntN(3)] + "'" + esc.Replace(s[cut:]) + "'"
	case 0: // E'': backslash escapes
		return "E'" + strings.NewReplacer("\\", "\\\\", "'", "\\'").Replace(s) + "'"
	case 1: // e'' with '' for a quote
		return "e'" + strings.NewReplacer("\\", "\\\\", "'", "''").Replace(s) + "'"
	case 2: // dollar quote with a tag
		return "$q$" + strings.ReplaceAll(s, "$q$", "") + "$q$"
	case 3: // $$
		return "$$" + strings.ReplaceAll(s, "$", "") + "$$"
	case 4: // continued over a newline (and a comment)
		cut := g.r.IntN(len(s) + 1)
		sep := []string{"\n", "\r", " \n ", "\n-- c ' \n", "\r\n"}[g.r.IntN(5)]
		return g.plain(s[:cut]) + sep + g.plain(s[cut:])
	}
	return g.plain(s)
}

// plain is s between single quotes, escaped as the setting reads them.
func (g *lexGen) plain(s string) string {
	if g.sc {
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	}
	// Off: a backslash escapes; a quote is '' or \'.
	q := "''"
	if g.r.IntN(2) == 0 {
		q = "\\'"
	}
	return "'" + strings.NewReplacer("\\", "\\\\", "'", q).Replace(s) + "'"
}

// gap is what may stand between two tokens.
func (g *lexGen) gap() string {
	switch g.r.IntN(8) {
	case 0:
		return " -- " + strings.NewReplacer("\n", "", "\r", "").Replace(g.text()) + []string{"\n", "\r"}[g.r.IntN(2)]
	case 1:
		c := strings.ReplaceAll(strings.ReplaceAll(g.text(), "/*", ""), "*/", "")
		if g.r.IntN(3) == 0 {
			c += "/* " + c + " */"
		}
		return "/*" + c + "*/"
	case 2:
		return "\n"
	case 3:
		return "\t"
	}
	return " "
}

func (g *lexGen) expr() string {
	switch g.r.IntN(8) {
	case 0:
		return `"` + strings.ReplaceAll(g.text(), `"`, `""`) + `"` // a column alias follows
	case 1:
		return "1" + g.gap() + "+" + g.gap() + "2"
	case 2:
		return "CASE WHEN true THEN 1 END"
	case 3:
		return "U&'\\0041'"
	}
	return g.literal(g.text())
}

// stmt returns one statement and whether it is one that may commit.
func (g *lexGen) stmt() string {
	switch g.r.IntN(14) {
	case 0:
		return "COMMIT"
	case 1:
		return "END" + g.gap() + []string{"", "WORK", "TRANSACTION"}[g.r.IntN(3)]
	case 2:
		return "COMMIT" + g.gap() + "AND" + g.gap() + []string{"CHAIN", "NO CHAIN"}[g.r.IntN(2)]
	case 3:
		return []string{"ROLLBACK", "ABORT", "ROLLBACK AND CHAIN", "ROLLBACK" + g.gap() + "WORK"}[g.r.IntN(4)]
	case 4:
		return []string{"SAVEPOINT s", "ROLLBACK TO s", "ROLLBACK TO SAVEPOINT s", "RELEASE s"}[g.r.IntN(4)]
	case 5:
		return "CREATE OR REPLACE FUNCTION pg_temp.lex_f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1;" + g.gap() + "END"
	case 6:
		return "INSERT INTO lex_mark VALUES (-1)"
	}
	s := "SELECT" + g.gap() + g.expr()
	if g.r.IntN(2) == 0 {
		s += g.gap() + "AS" + g.gap() + `"` + strings.ReplaceAll(g.text(), `"`, `""`) + `"`
	}
	if g.r.IntN(3) == 0 {
		s += "," + g.gap() + g.expr()
	}
	return s
}

// junk strings pieces together at random: most are refused whole,
// some run in ways no one would write.
func (g *lexGen) junk() string {
	pieces := []string{"SELECT ", "SELECT 1", " 1", ";", "COMMIT", "END", " AND CHAIN", "'", "\\", "\\'", "''", "E'", "e'", "U&'", "\"", "$$", "$a$", "$1", "--", "/*", "*/", "\n", "\r", " ", "(", ")", "x", "::text", "BEGIN ATOMIC", "ROLLBACK"}
	var b strings.Builder
	for n := 2 + g.r.IntN(10); n > 0; n-- {
		b.WriteString(pieces[g.r.IntN(len(pieces))])
	}
	return b.String()
}

func (g *lexGen) sql() string {
	if g.r.IntN(4) == 0 {
		return g.junk()
	}
	var b strings.Builder
	for n := 1 + g.r.IntN(3); n > 0; n-- {
		b.WriteString(g.gap())
		b.WriteString(g.stmt())
		b.WriteString(g.gap())
		if n > 1 || g.r.IntN(2) == 0 {
			b.WriteString(";")
		}
	}
	return b.String()
}

func TestTxEffectAgreesWithPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	conn, err := c.Nodes()[0].Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "CREATE TABLE lex_mark (k int)")
	require.NoError(t, err)
	pg := conn.PgConn()

	r := rand.New(rand.NewPCG(*lexRandomSeed, 0))
	var ran, committed, failed, misses, extra int
	for k := 1; k <= *lexRandomCases; k++ {
		g := &lexGen{r: r, sc: r.IntN(2) == 0}
		sql := g.sql()
		_, err := pg.Exec(ctx, fmt.Sprintf("SET standard_conforming_strings = %v; BEGIN; INSERT INTO lex_mark VALUES (%d)", g.sc, k)).ReadAll()
		require.NoError(t, err)
		_, err = pg.Exec(ctx, sql).ReadAll()
		if err != nil {
			failed++
		}
		if pg.TxStatus() != 'I' {
			_, err := pg.Exec(ctx, "ROLLBACK").ReadAll()
			require.NoError(t, err)
		}
		var n int
		require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM lex_mark WHERE k = $1", k).Scan(&n))
		ran++
		if n == 0 {
			if txEffect(sql) == mayCommit {
				extra++ // costs a retry after a loss, no more
			}
			continue
		}
		committed++
		if txEffect(sql) != mayCommit {
			misses++
			t.Errorf("MISS (seed %d, case %d, standard_conforming_strings %v): PostgreSQL committed on %q; txEffect says %d",
				*lexRandomSeed, k, g.sc, sql, txEffect(sql))
		}
	}
	t.Logf("%d statements (seed %d): %d committed, %d refused by the server, %d missed, %d read as a possible commit that was not",
		ran, *lexRandomSeed, committed, failed, misses, extra)
	// The generator must reach commits and statements that run, or the
	// test checks nothing.
	require.Greater(t, committed, *lexRandomCases/20)
	require.Less(t, failed, *lexRandomCases*9/10)
}
