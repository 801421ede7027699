package failover

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/internal/stmtwatch"
)

// fnTx is the transaction RunInTx hands fn, and the savepoints fn begins
// in it. What fn sends is noted before it is sent (see fnState): on a
// connection of a Manager's pool, everything sent on it, through tx.Conn()
// too (stmtwatch); elsewhere, what goes through tx. RunInTx never runs fn
// again once something fn sent may have committed.
type fnTx struct {
	pgx.Tx
	conn      *pgx.Conn
	st        *fnState
	savepoint bool
}

// fnState is what fn made of its transaction, as far as what it sent
// tells.
type fnState struct {
	// watched: every statement sent on the connection is noted, through
	// tx.Conn() too (stmtwatch); set before fn runs.
	watched bool
	// over: the transaction ended (fn committed or rolled it back).
	over atomic.Bool
	// committed: something fn sent may have committed: a COMMIT (Commit,
	// hasql.CommitToken, a statement that ends a transaction, or one that
	// may be a prepared statement's name), or a statement after the
	// transaction was over (it ran on its own).
	committed atomic.Bool
	// unsure: the last commit fn sent did not say it succeeded.
	unsure atomic.Bool
	// syncCancelled: a commit of fn's ended its wait for synchronous
	// standbys (hasql.SyncRepCancelled, read right after it).
	syncCancelled atomic.Bool
	// lastCommit: the statement noted last may have committed (its
	// SyncRepCancelled is read when the next one is noted).
	lastCommit atomic.Bool
	// rolledBack: fn rolled the transaction back (and may have gone on
	// in a new one, AND CHAIN, or outside one); savepoints: fn set a
	// savepoint, and may have rolled a failed statement back to it.
	rolledBack, savepoints atomic.Bool
	// last is how the transaction fn sent last ended (lastEnd), 0 none.
	last atomic.Int32
	// answerDue: the statement noted last is a lone COMMIT (or a name
	// that may be one): the next answer the end watch gives is its (see
	// answered).
	answerDue atomic.Bool
	conn      *pgx.Conn
}

// How the transaction fn sent last ended.
const (
	endUnsure       = iota + 1 // a COMMIT went out, its answer unread here
	endCommit                  // committed
	endCommitFailed            // the COMMIT failed or rolled back
	endRollback                // rolled back
)

// newFnTx wraps tx for fn; stop ends the watch of its connection.
func newFnTx(tx pgx.Tx) (t *fnTx, stop func()) {
	t = &fnTx{Tx: tx, conn: tx.Conn(), st: &fnState{conn: tx.Conn()}}
	stop = func() {}
	if stmtwatch.Watch != nil && t.conn != nil {
		if s, ok := stmtwatch.Watch(t.conn, func(sql string) { t.st.note(sql) }); ok {
			t.st.watched, stop = true, s
			if stmtwatch.Ended != nil {
				if e, ok := stmtwatch.Ended(t.conn, t.st.answered); ok {
					stop = func() { s(); e() }
				}
			}
		}
	}
	return t, stop
}

func (t *fnTx) Begin(ctx context.Context) (pgx.Tx, error) {
	t.st.savepoints.Store(true)
	sp, err := t.Tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &fnTx{Tx: sp, conn: t.conn, st: t.st, savepoint: true}, nil
}

func (t *fnTx) Commit(ctx context.Context) error {
	if t.savepoint {
		return t.Tx.Commit(ctx) // RELEASE SAVEPOINT: the transaction goes on
	}
	if !t.st.watched {
		t.st.committing()
	}
	err := t.Tx.Commit(ctx)
	t.st.over.Store(true)
	t.st.commitDone(t.conn, err, "")
	return err
}

func (t *fnTx) Rollback(ctx context.Context) error {
	if t.savepoint {
		return t.Tx.Rollback(ctx)
	}
	if !t.st.over.Load() {
		t.st.rolledBack.Store(true)
		t.st.last.Store(endRollback)
	}
	err := t.Tx.Rollback(ctx)
	t.st.over.Store(true) // on a lost connection the server rolls it back
	return err
}

func (t *fnTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	// A COMMIT outside a transaction commits nothing of fn's (see note).
	c := t.before(sql) && txStatus(t.conn) != 'I'
	tag, err := t.Tx.Exec(ctx, sql, args...)
	t.after(c, tag, err)
	return tag, err
}

func (t *fnTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	t.before(sql)
	return t.Tx.Query(ctx, sql, args...)
}

func (t *fnTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	t.before(sql)
	return t.Tx.QueryRow(ctx, sql, args...)
}

func (t *fnTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if b != nil {
		for _, q := range b.QueuedQueries {
			t.before(q.SQL)
		}
	}
	return t.Tx.SendBatch(ctx, b)
}

func (t *fnTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	t.before("COPY")
	return t.Tx.CopyFrom(ctx, table, columns, src)
}

// before notes sql, unless the watch does; it reports whether sql may
// commit.
func (t *fnTx) before(sql string) bool {
	if t.st.watched {
		return txEffect(sql) == mayCommit
	}
	return t.st.note(sql)
}

// note notes what sql may do to the transaction, before it is sent; it
// reports whether sql may commit.
func (st *fnState) note(sql string) bool {
	if st.lastCommit.Swap(false) && st.conn != nil && hasql.SyncRepCancelled(st.conn) {
		st.syncCancelled.Store(true) // of the commit noted before
	}
	r := readTx(sql)
	if r.savepoint {
		st.savepoints.Store(true)
	}
	// A COMMIT sent with no transaction open (after fn's ROLLBACK or
	// COMMIT) commits nothing: its answer ("COMMIT", with the warning
	// "there is no transaction in progress") says nothing of fn's.
	status := txStatus(st.conn)
	st.answerDue.Store(r.effect == mayCommit && loneWord(sql) && status != 'I' && status != 0)
	if !st.over.Load() && status == 'I' {
		// The transaction ended by means the text before did not show
		// (the status is the last the server gave: one it gave later
		// cannot be of the transaction again).
		st.over.Store(true)
		st.committed.Store(true)
	}
	if st.over.Load() {
		if r.effect == rollsBack || r.effect == rollsBackChain {
			// Outside a transaction a rollback does nothing (and the
			// same statement may be noted twice: by pgx's tracer and
			// from the wire, see stmtwatch).
			return false
		}
		// Outside the transaction: it commits on its own (a write may
		// wait for synchronous standbys).
		st.committed.Store(true)
		st.lastCommit.Store(true)
		return true
	}
	switch r.effect {
	case mayCommit:
		st.committing()
		st.lastCommit.Store(true)
		return true
	case rollsBack:
		st.rolledBack.Store(true)
		st.last.Store(endRollback)
		st.over.Store(true)
	case rollsBackChain:
		st.rolledBack.Store(true)
		st.last.Store(endRollback)
	}
	return false
}

// after notes what the server said of the transaction after a statement
// sent through Exec: a COMMIT answered ROLLBACK (the transaction had
// failed) did not commit, and a transaction over by means the text did
// not show (a prepared statement's name) may have committed.
func (t *fnTx) after(committing bool, tag pgconn.CommandTag, err error) {
	st := t.st
	if committing {
		st.commitDone(t.conn, err, tag.String())
	}
	if txStatus(t.conn) == 'I' && !st.over.Load() {
		st.over.Store(true)
		st.committed.Store(true)
	}
}

// txStatus is the transaction status the server last gave on conn ('I'
// idle, 'T' in a transaction, 'E' in a failed one), 0 when conn is nil
// or closed.
func txStatus(conn *pgx.Conn) byte {
	if conn == nil || conn.IsClosed() {
		return 0
	}
	return conn.PgConn().TxStatus()
}

// answered notes what the server answered a statement pgx traced (see
// stmtwatch.Ended): the answer to a lone COMMIT noted last says whether it
// committed, whichever way fn sent it (Exec, Query, QueryRow, a batch of
// it alone, through tx or tx.Conn()).
func (st *fnState) answered(tag string, err error) {
	if st.answerDue.Swap(false) {
		st.commitDone(st.conn, err, tag)
	}
}

// loneWord reports whether sql is one word alone (a trailing semicolon
// apart): COMMIT, END, or a name that may be a prepared statement's.
func loneWord(sql string) bool {
	w := strings.TrimRight(strings.TrimSpace(sql), "; \t\n\r")
	return w != "" && len(word(w)) == len(w)
}

func (st *fnState) committing() {
	st.committed.Store(true)
	st.unsure.Store(true)
	st.last.Store(endUnsure)
}

// commitDone notes how a COMMIT of fn's ended: err, or the command tag the
// server answered with ("ROLLBACK" for a transaction that had failed).
func (st *fnState) commitDone(conn *pgx.Conn, err error, tag string) {
	switch {
	case err != nil && conn.IsClosed():
		return // unknown: still unsure
	case err != nil || strings.HasPrefix(tag, "ROLLBACK"):
		st.unsure.Store(false)
		st.last.Store(endCommitFailed)
		return
	}
	st.unsure.Store(false)
	st.last.Store(endCommit)
	if hasql.SyncRepCancelled(conn) {
		st.syncCancelled.Store(true)
	}
}

type effect int

const (
	keeps          effect = iota // the transaction goes on
	rollsBack                    // ROLLBACK or ABORT: it ends, nothing committed
	rollsBackChain               // ROLLBACK AND CHAIN: nothing committed, a new one begins
	mayCommit                    // it may end with a commit
)

// txRead is what one statement string may do to the transaction it runs
// in, read with standard_conforming_strings both on and off.
type txRead struct {
	effect    effect
	savepoint bool // it may set a savepoint
}

// txEffect tells what sql may do to the transaction it runs in.
func txEffect(sql string) effect { return readTx(sql).effect }

// readTx reads sql both ways (scanTx) and tells what it may do to the
// transaction. A single word that is not a statement of its own may be
// the name of a prepared statement pgxha did not see prepared (pgx runs
// one given its name), which may be a COMMIT.
func readTx(sql string) txRead {
	if w := strings.TrimRight(strings.TrimSpace(sql), "; \t\n\r"); w != "" && len(word(w)) == len(w) {
		switch strings.ToUpper(w) {
		case "COMMIT", "END":
			return txRead{effect: mayCommit}
		case "ROLLBACK", "ABORT":
			return txRead{effect: rollsBack}
		case "BEGIN", "CHECKPOINT", "VACUUM", "ANALYZE", "ANALYSE", "COPY":
			return txRead{effect: keeps}
		}
		return txRead{effect: mayCommit}
	}
	a, b := scanTx(sql, false), scanTx(sql, true)
	r := txRead{savepoint: a.savepoints || b.savepoints}
	switch {
	case a.commits || b.commits:
		r.effect = mayCommit
	case a.rollbacks || b.rollbacks:
		r.effect = rollsBack
	case a.chains || b.chains:
		r.effect = rollsBackChain
	}
	return r
}

// scanned is what scanTx found in a string of statements.
type scanned struct {
	commits    bool // a statement may commit (or the text could not be read to its end)
	rollbacks  bool // one rolls the transaction back
	chains     bool // one rolls it back and begins another (AND CHAIN)
	savepoints bool // one sets a savepoint
}

// scanTx finds the statements of sql that end a transaction. With
// backslash, a backslash escapes the next byte in every string. A
// statement after one that ended the transaction runs on its own: it may
// commit. The END of a BEGIN ATOMIC body (CREATE FUNCTION, CREATE
// PROCEDURE) reads as one that may commit: telling it apart takes
// PostgreSQL's grammar, and reading it so costs a retry at worst.
func scanTx(sql string, backslash bool) (r scanned) {
	first := true // at the start of a statement
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == ';':
			first = true
			i++
		case isBlank(c) || c == '(':
			i++
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			j := strings.IndexAny(sql[i:], "\n\r")
			if j < 0 {
				return r // a comment to the end: nothing more
			}
			i += j + 1
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			j, ok := skipBlockComment(sql, i)
			if !ok {
				r.commits = true
				return r
			}
			i = j
		default:
			if first && isWordStart(c) {
				w := word(sql[i:])
				if r.rollbacks {
					r.commits = true // after a ROLLBACK: on its own
				}
				switch stmtEndsTx(w, sql[i+len(w):]) {
				case mayCommit:
					r.commits = true
				case rollsBack:
					r.rollbacks = true
				case rollsBackChain:
					r.chains = true
				}
				if strings.EqualFold(w, "SAVEPOINT") {
					r.savepoints = true
				}
			}
			first = false
			j, ok := skipToken(sql, i, backslash)
			if !ok {
				r.commits = true
				return r
			}
			i = j
		}
	}
	return r
}

// stmtEndsTx tells what a statement whose first word is w, followed by
// rest, does to the transaction.
func stmtEndsTx(w, rest string) effect {
	switch u := strings.ToUpper(w); u {
	case "COMMIT", "END":
		return mayCommit
	case "ROLLBACK", "ABORT":
		// ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name goes back
		// within the transaction; [AND CHAIN] begins another; ROLLBACK
		// PREPARED ends another one (refused inside a transaction block).
		next, more := nextWord(rest)
		if n := strings.ToUpper(next); n == "WORK" || n == "TRANSACTION" {
			next, more = nextWord(more)
		}
		switch strings.ToUpper(next) {
		case "TO":
			if u == "ROLLBACK" {
				return keeps
			}
		case "AND":
			if n, _ := nextWord(more); strings.EqualFold(n, "CHAIN") {
				return rollsBackChain
			}
		}
		return rollsBack
	case "PREPARE":
		if next, _ := nextWord(rest); strings.EqualFold(next, "TRANSACTION") {
			return mayCommit
		}
	}
	return keeps
}

// nextWord returns the next word of s after blanks and comments, and
// what follows it ("" when the next token is not a word).
func nextWord(s string) (string, string) {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case isBlank(c):
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			j := strings.IndexAny(s[i:], "\n\r")
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
// string, or one other byte. False when a quote does not end. With
// backslash, a backslash escapes in every string literal.
func skipToken(s string, i int, backslash bool) (int, bool) {
	c := s[i]
	switch {
	case (c == 'e' || c == 'E') && i+1 < len(s) && s[i+1] == '\'' && (i == 0 || !isWordByte(s[i-1])):
		return skipString(s, i+1, true)
	case isWordStart(c):
		return i + len(word(s[i:])), true
	case c == '\'':
		return skipString(s, i, backslash)
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

// isBlank reports whether c is white space to PostgreSQL's lexer (a
// vertical tab is, from PostgreSQL 16).
func isBlank(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// skipString returns the index after the string literal that opens at i,
// continued, as PostgreSQL continues one, by another quote after white
// space that holds a newline (comments too): the continuation reads
// backslashes as the string it continues does.
func skipString(s string, i int, backslash bool) (int, bool) {
	for {
		j, ok := skipQuoted(s, i, '\'', backslash)
		if !ok {
			return j, false
		}
		k, more := continued(s, j)
		if !more {
			return j, true
		}
		i = k
	}
}

// continued reports whether a string literal that ended at j goes on: white
// space holding a newline (and comments after it), then a quote at k.
func continued(s string, j int) (k int, ok bool) {
	newline := false
	for k = j; k < len(s); {
		switch {
		case s[k] == '\n' || s[k] == '\r':
			newline = true
			k++
		case isBlank(s[k]):
			k++
		case newline && strings.HasPrefix(s[k:], "--"):
			e := strings.IndexAny(s[k:], "\n\r")
			if e < 0 {
				return k, false
			}
			k += e
		default:
			return k, newline && s[k] == '\''
		}
	}
	return k, false
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
