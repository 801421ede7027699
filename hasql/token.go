package hasql

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Token says where a write is in a cluster's history: the master's WAL
// insert position after it, the timeline it was written on and the
// cluster's system identifier. Carry it across requests, processes and jobs
// as its String (a cookie, a header, a job's payload) and read with
// After(tok): the read sees the write, or fails saying why it cannot.
//
// The zero Token stands for "no write": After(Token{}) asks nothing.
type Token struct {
	// LSN is the master's WAL insert position when the token was taken: at
	// or past the write's commit record (and past whatever other sessions
	// wrote before it was read).
	LSN LSN
	// Timeline is the master's timeline then.
	Timeline uint32
	// SystemID is the cluster's system identifier (0: unknown).
	SystemID uint64
}

// tokenVersion prefixes a token's text; another version is refused.
const tokenVersion = "v1"

// IsZero reports whether t is the zero Token.
func (t Token) IsZero() bool { return t == Token{} }

// String returns t's text form, "v1.<timeline>.<lsn>.<system id>" in
// lowercase hexadecimal, e.g. "v1.2.3000148.7312e3e1c55a1b2f": at most 45
// bytes of characters that need no escaping in a URL, an HTTP header or a
// cookie. The zero Token gives "".
func (t Token) String() string {
	if t.IsZero() {
		return ""
	}
	b := make([]byte, 0, 45)
	b = append(b, tokenVersion...)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(t.Timeline), 16)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(t.LSN), 16)
	b = append(b, '.')
	b = strconv.AppendUint(b, t.SystemID, 16)
	return string(b)
}

// MarshalText implements encoding.TextMarshaler (String).
func (t Token) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (ParseToken; empty
// text gives the zero Token).
func (t *Token) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*t = Token{}
		return nil
	}
	v, err := ParseToken(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// maxTokenLen bounds the text ParseToken reads: a valid token is at most 45
// bytes.
const maxTokenLen = 64

// ParseToken reads a token's text form (see Token.String). It accepts only
// what String makes (lowercase hexadecimal without leading zeros, a
// timeline of at least 1) and returns an error naming what is wrong with
// anything else, the empty string included; it never panics.
func ParseToken(s string) (Token, error) {
	if s == "" {
		return Token{}, errors.New("hasql: token: empty")
	}
	if len(s) > maxTokenLen {
		return Token{}, fmt.Errorf("hasql: token: %d bytes, longer than any token (%d)", len(s), maxTokenLen)
	}
	parts := strings.Split(s, ".")
	if parts[0] != tokenVersion {
		return Token{}, fmt.Errorf("hasql: token %q: unknown version (want %s.<timeline>.<lsn>.<system id>)", s, tokenVersion)
	}
	if len(parts) != 4 {
		return Token{}, fmt.Errorf("hasql: token %q: want %s.<timeline>.<lsn>.<system id>", s, tokenVersion)
	}
	var f [3]uint64
	for i, name := range []string{"timeline", "lsn", "system id"} {
		v, err := parseHex(parts[i+1])
		if err != nil {
			return Token{}, fmt.Errorf("hasql: token %q: %s: %w", s, name, err)
		}
		f[i] = v
	}
	if f[0] == 0 || f[0] > 1<<32-1 {
		return Token{}, fmt.Errorf("hasql: token %q: timeline %x out of range (1 to ffffffff)", s, f[0])
	}
	return Token{Timeline: uint32(f[0]), LSN: LSN(f[1]), SystemID: f[2]}, nil
}

// parseHex reads a canonical lowercase hexadecimal number.
func parseHex(s string) (uint64, error) {
	switch {
	case s == "":
		return 0, errors.New("empty")
	case len(s) > 16:
		return 0, errors.New("more than 16 hexadecimal digits")
	case len(s) > 1 && s[0] == '0':
		return 0, errors.New("leading zero")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return 0, fmt.Errorf("%q is not a lowercase hexadecimal digit", c)
		}
	}
	return strconv.ParseUint(s, 16, 64)
}

// Merge returns the later of t and u: the one on the newer timeline, or on
// the same timeline the one further in the WAL. A zero token gives the
// other; tokens of two clusters (different system identifiers) give u, the
// newer argument. Merging the tokens of several writes of one timeline (one
// per request of a user, say) gives one that stands for all of them. Across
// a failover it stands for the newer timeline's: a write of the older one
// that the failover lost is no longer reported (see
// docs/read-your-writes.md); pass both to After instead, which resolves
// each.
func (t Token) Merge(u Token) Token {
	switch {
	case t.IsZero():
		return u
	case u.IsZero():
		return t
	case t.SystemID != u.SystemID && t.SystemID != 0 && u.SystemID != 0:
		return u
	case u.Timeline > t.Timeline, u.Timeline == t.Timeline && u.LSN > t.LSN:
		if u.SystemID == 0 {
			u.SystemID = t.SystemID
		}
		return u
	default:
		if t.SystemID == 0 {
			t.SystemID = u.SystemID
		}
		return t
	}
}

// tokenSQL reads, on the master, its WAL insert position, the timeline it
// writes on (pg_walfile_name uses the insert timeline; it fails on a
// replica) and the cluster's system identifier, in one round trip.
const tokenSQL = `SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8,
	('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int8,
	(SELECT system_identifier FROM pg_control_system())`

// Token returns a token for the writes made so far on the master now: it
// runs one statement on whichever node is master when it is called. A
// token for a write of your own is best read on the connection that made
// it (Querier.ExecToken, CommitToken): if the master changed between the
// write and this call (a failover that lost the write), Token names the
// new master's timeline and position, and a read after it does not report
// the write as lost.
func (m *Manager) Token(ctx context.Context) (Token, error) {
	return tokenOf(ctx, m.Master())
}

func tokenOf(ctx context.Context, q RowQuerier) (Token, error) {
	var lsn, tl int64
	var sys uint64
	if err := q.QueryRow(ctx, tokenSQL).Scan(&lsn, &tl, &sys); err != nil {
		return Token{}, fmt.Errorf("hasql: token: %w", err)
	}
	return Token{LSN: LSN(lsn), Timeline: uint32(tl), SystemID: sys}, nil
}

// CommitToken commits tx and returns a token for it, read on the same
// connection right after the commit: the CommitLSN of tokens, with the same
// rules (transactions from m.Master().Begin, a *pgxpool.Conn or a
// *pgx.Conn; one begun on a *pgxpool.Pool is refused with
// ErrCommitLSNPoolTx before it commits). If the commit succeeded but the
// token could not be read, the error unwraps to ErrTokenUnread and the
// transaction is committed.
func CommitToken(ctx context.Context, tx pgx.Tx) (Token, error) {
	if rt, ok := tx.(*routedTx); ok {
		if err := rt.Tx.Commit(ctx); err != nil {
			rt.once.Do(rt.conn.Release)
			return Token{}, err
		}
		if err := stillInTx(rt.conn.Conn(), "CommitToken"); err != nil {
			rt.once.Do(rt.conn.Release)
			return Token{}, err
		}
		tok, err := tokenOf(ctx, rt.conn)
		rt.once.Do(rt.conn.Release)
		return tok, committedTokenErr(err)
	}
	if _, ok := tx.(*pgxpool.Tx); ok {
		return Token{}, ErrCommitLSNPoolTx
	}
	conn := tx.Conn()
	if err := tx.Commit(ctx); err != nil {
		return Token{}, err
	}
	if err := stillInTx(conn, "CommitToken"); err != nil {
		return Token{}, err
	}
	tok, err := tokenOf(ctx, conn)
	return tok, committedTokenErr(err)
}

func committedTokenErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: CommitToken: %w", ErrTokenUnread, err)
}
