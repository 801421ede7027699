package failover

import "testing"

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
// error there, which is why endstx_pg_test.go's "vertical tab" case, run
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
