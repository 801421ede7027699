package failover

import "testing"

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
