package failover

import (
	"testing"
)

// endsTx reports whether sql holds a statement that ends a transaction:
// one whose first word is COMMIT, END, ABORT, ROLLBACK (not ROLLBACK TO a
// savepoint) or PREPARE TRANSACTION. It reads string literals, quoted
// identifiers, dollar quotes and comments as PostgreSQL's lexer does, both
// with standard_conforming_strings on and off (a backslash escaping in
// every string), and says true when it cannot tell (an unterminated quote
// or comment).
func endsTx(sql string) bool {
	a, b := scanTx(sql, false), scanTx(sql, true)
	return a.commits || a.rollbacks || a.chains || b.commits || b.rollbacks || b.chains
}

// endsTx tells the statements that end a transaction by their first word,
// past quotes, dollar quotes and comments; when it cannot tell it says
// they may.
func TestEndsTx(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want bool
	}{
		{"COMMIT", true},
		{"commit", true},
		{"  end;", true},
		{"END TRANSACTION", true},
		{"abort", true},
		{"COMMIT AND CHAIN", true},
		{"ROLLBACK", true},
		{"rollback work", true},
		{"ROLLBACK TO SAVEPOINT a", false},
		{"ROLLBACK TO a", false},
		{"rollback transaction /* c */ to a", false},
		{"ROLLBACK PREPARED 'x'", true},
		{"PREPARE TRANSACTION 'x'", true},
		{"PREPARE q AS SELECT 1", false},
		{"INSERT INTO t VALUES (1); COMMIT", true},
		{"INSERT INTO t VALUES ('; COMMIT')", false},
		{"INSERT INTO t VALUES (E'\\'; COMMIT')", false},
		{`SELECT "a;commit" FROM t`, false},
		{"SELECT $$; COMMIT$$", false},
		{"SELECT $tag$ ; COMMIT $tag$", false},
		{"SELECT $1; COMMIT", true},
		{"SELECT CASE WHEN a THEN 1 END FROM t", false},
		{"UPDATE t SET commit = 1", false},
		{"-- COMMIT\nSELECT 1", false},
		{"/* a /* nested */ COMMIT */ SELECT 1", false},
		{"SELECT 1 /* unterminated", true},
		{"SELECT 'unterminated", true},
		{"(COMMIT)", true},
		{"", false},
		{"SELECT 1; -- then\n commit", true},
		{"SELECT 1; -- then\r commit", true},
		{"SELECT E'a'\n'\\''; COMMIT; --'", true},
		{"SELECT '\\'' ; COMMIT; --'", true},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END", true}, // its END read as one: a retry at worst
		{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; COMMIT", true},
	} {
		if got := endsTx(tc.sql); got != tc.want {
			t.Errorf("endsTx(%q) = %v, want %v", tc.sql, got, tc.want)
		}
	}
}

// A column named begin given the bare alias atomic (both unreserved in
// PostgreSQL 15, a bare label) opens no BEGIN ATOMIC body, but the lexer
// counts one and takes the next statement's END for the body's end.
// PostgreSQL runs the END (a COMMIT); with AND CHAIN the transaction
// status stays 'T' and RunInTx's last look sees nothing either
// (TestRunInTxFnEndsTheTransactionMore/BEGIN_ATOMIC_look-alike_hides_END_AND_CHAIN).
func TestEndsTxAtomicLookAlike(t *testing.T) {
	for _, sql := range []string{
		"SELECT begin atomic FROM (VALUES (1)) v(begin); END AND CHAIN",
		"SELECT begin atomic FROM (VALUES (1)) v(begin); END",
		"SELECT begin AS atomic FROM (VALUES (1)) v(begin); END",
	} {
		if got := txEffect(sql); got != mayCommit {
			t.Errorf("txEffect(%q) = %v, want mayCommit (PostgreSQL commits)", sql, got)
		}
	}
}

// Statements PostgreSQL 15 (standard_conforming_strings on, the
// default) runs a COMMIT in, and endsTx does not see. Each of scanTx's two
// readings is wrong somewhere in the text: the backslash-everywhere reading
// on a plain '...\' string, the backslash-only-in-E” reading on the
// continuation of an E” string; ORing them does not make one right reading.
//
// PostgreSQL reads:  SELECT E'x' <newline> '\”   (one E string: x')
//
//	, 'a\'                        (a plain string: a\)
//	; COMMIT ; --'                (COMMIT, then a comment)
func TestEndsTxMixedEscapeModes(t *testing.T) {
	for _, sql := range []string{
		"SELECT E'x'\n'\\'' , 'a\\'; COMMIT; --'",
		"INSERT INTO t VALUES (E'x'\n'\\'', 'a\\'); COMMIT; --')",
	} {
		if endsTx(sql) {
			continue
		}
		t.Errorf("endsTx(%q) = false; PostgreSQL 15 runs its COMMIT (scanTx plain %+v, backslash %+v)",
			sql, scanTx(sql, false), scanTx(sql, true))
	}
}

// PostgreSQL 16 and later read a vertical tab as whitespace (scan.l,
// REL_17_STABLE: space [ \t\n\r\f\v]); PostgreSQL 15 does not (a syntax
// error there, which is why txlex_pg_test.go's "vertical tab" case, run
// on 15, sees no COMMIT). pgxha supports servers from 12 on (checker): on
// 16 and 17 this COMMIT runs, and scanTx, which ends its statement-start
// state at the \v, misses it.
func TestEndsTxVerticalTab(t *testing.T) {
	for _, sql := range []string{"SELECT 1;\vCOMMIT", "INSERT INTO t VALUES (1);\v\vCOMMIT"} {
		if !endsTx(sql) {
			t.Errorf("endsTx(%q) = false; PostgreSQL 16+ runs its COMMIT", sql)
		}
	}
}

// A statement fn sends after its transaction ended runs on its own
// (autocommit) and commits; note marks it "committed" but not lastCommit,
// so the warning of its cancelled synchronous-replication wait is never
// read: the statement after it clears the connection's flag. (The cluster
// test TestRunInTxFnState/autocommit_write... shows RunInTx then
// returning nil.)
func TestNoteReadsTheSyncFlagOfAnAutocommitStatement(t *testing.T) {
	st := &fnState{watched: true}
	st.note("INSERT INTO t VALUES (1)")
	st.note("COMMIT")
	st.over.Store(true) // as after() finds the status 'I'
	st.note("INSERT INTO t VALUES (2)")
	if !st.lastCommit.Load() {
		t.Errorf("after an autocommit INSERT, lastCommit = false: its SyncRepCancelled is not read when the next statement is noted")
	}
}
