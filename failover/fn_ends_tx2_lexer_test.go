package failover

import "testing"

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
