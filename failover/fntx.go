package failover

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// fnTx is the transaction RunInTx hands fn. It notes when fn ends the
// transaction itself, or may have: Commit or Rollback (hasql.CommitToken
// calls Commit), or a statement sent through it that ends a transaction
// (COMMIT, END, ROLLBACK, ABORT, PREPARE TRANSACTION), noted before it
// is sent. RunInTx never runs fn again after that.
type fnTx struct {
	pgx.Tx
	ended atomic.Bool
}

func (t *fnTx) Commit(ctx context.Context) error {
	t.ended.Store(true)
	return t.Tx.Commit(ctx)
}

func (t *fnTx) Rollback(ctx context.Context) error {
	t.ended.Store(true)
	return t.Tx.Rollback(ctx)
}

func (t *fnTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	t.note(sql)
	return t.Tx.Exec(ctx, sql, args...)
}

func (t *fnTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	t.note(sql)
	return t.Tx.Query(ctx, sql, args...)
}

func (t *fnTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	t.note(sql)
	return t.Tx.QueryRow(ctx, sql, args...)
}

func (t *fnTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if b != nil {
		for _, q := range b.QueuedQueries {
			t.note(q.SQL)
		}
	}
	return t.Tx.SendBatch(ctx, b)
}

func (t *fnTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	t.note(sql)
	return t.Tx.Prepare(ctx, name, sql)
}

func (t *fnTx) note(sql string) {
	if endsTx(sql) {
		t.ended.Store(true)
	}
}

// endsTx reports whether sql holds a statement that ends a transaction:
// one whose first word is COMMIT, END, ABORT, ROLLBACK (not ROLLBACK TO
// a savepoint) or PREPARE TRANSACTION. It reads string literals, quoted
// identifiers, dollar quotes and comments as PostgreSQL's lexer does, and
// says true when it cannot tell (an unterminated quote or comment).
func endsTx(sql string) bool {
	first := true // at the start of a statement
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == ';':
			first = true
			i++
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '(':
			i++
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				return false // a comment to the end: nothing more
			}
			i += j + 1
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			j, ok := skipBlockComment(sql, i)
			if !ok {
				return true
			}
			i = j
		default:
			if first && isWordStart(c) {
				if w := word(sql[i:]); stmtEndsTx(w, sql[i+len(w):]) {
					return true
				}
			}
			first = false
			j, ok := skipToken(sql, i)
			if !ok {
				return true
			}
			i = j
		}
	}
	return false
}

// stmtEndsTx reports whether a statement whose first word is w, followed
// by rest, ends a transaction.
func stmtEndsTx(w, rest string) bool {
	switch strings.ToUpper(w) {
	case "COMMIT", "END", "ABORT":
		return true
	case "ROLLBACK":
		// ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name goes back
		// within the transaction; any other ROLLBACK ends it.
		next, more := nextWord(rest)
		if u := strings.ToUpper(next); u == "WORK" || u == "TRANSACTION" {
			next, _ = nextWord(more)
		}
		return !strings.EqualFold(next, "TO")
	case "PREPARE":
		next, _ := nextWord(rest)
		return strings.EqualFold(next, "TRANSACTION")
	}
	return false
}

// nextWord returns the next word of s after blanks and comments, and
// what follows it ("" when the next token is not a word).
func nextWord(s string) (string, string) {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			j := strings.IndexByte(s[i:], '\n')
			if j < 0 {
				return "", ""
			}
			i += j + 1
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			j, ok := skipBlockComment(s, i)
			if !ok {
				return "", ""
			}
			i = j
		case isWordStart(c):
			w := word(s[i:])
			return w, s[i+len(w):]
		default:
			return "", s[i:]
		}
	}
	return "", ""
}

func isWordStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isWordByte(c byte) bool {
	return isWordStart(c) || c >= '0' && c <= '9' || c == '$'
}

// word returns the word at the start of s.
func word(s string) string {
	i := 0
	for i < len(s) && isWordByte(s[i]) {
		i++
	}
	return s[:i]
}

// skipBlockComment returns the index after the (nested) comment that
// begins at i, and false when it does not end.
func skipBlockComment(s string, i int) (int, bool) {
	depth := 0
	for i < len(s) {
		switch {
		case strings.HasPrefix(s[i:], "/*"):
			depth++
			i += 2
		case strings.HasPrefix(s[i:], "*/"):
			depth--
			i += 2
			if depth == 0 {
				return i, true
			}
		default:
			i++
		}
	}
	return i, false
}

// skipToken returns the index after the token at i: a word (with an E”
// string it prefixes), a quoted string or identifier, a dollar-quoted
// string, or one other byte. False when a quote does not end.
func skipToken(s string, i int) (int, bool) {
	c := s[i]
	switch {
	case (c == 'e' || c == 'E') && i+1 < len(s) && s[i+1] == '\'' && (i == 0 || !isWordByte(s[i-1])):
		return skipQuoted(s, i+1, '\'', true)
	case isWordStart(c):
		return i + len(word(s[i:])), true
	case c == '\'':
		return skipQuoted(s, i, '\'', false)
	case c == '"':
		return skipQuoted(s, i, '"', false)
	case c == '$':
		// $n is a parameter; $tag$ or $$ opens a dollar-quoted string.
		j := i + 1
		for j < len(s) && isWordByte(s[j]) && s[j] != '$' {
			j++
		}
		if j < len(s) && s[j] == '$' && (j == i+1 || !(s[i+1] >= '0' && s[i+1] <= '9')) {
			tag := s[i : j+1]
			k := strings.Index(s[j+1:], tag)
			if k < 0 {
				return len(s), false
			}
			return j + 1 + k + len(tag), true
		}
		return j, true
	}
	return i + 1, true
}

// skipQuoted returns the index after the string quoted by q that opens at
// i (” or "" inside it is the quote itself; with backslash, a backslash
// escapes the next byte).
func skipQuoted(s string, i int, q byte, backslash bool) (int, bool) {
	for j := i + 1; j < len(s); j++ {
		switch {
		case backslash && s[j] == '\\':
			j++
		case s[j] == q:
			if j+1 < len(s) && s[j+1] == q {
				j++
				continue
			}
			return j + 1, true
		}
	}
	return len(s), false
}
