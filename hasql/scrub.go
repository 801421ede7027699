package hasql

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgxha/pgxha/checker"
	"github.com/pgxha/pgxha/internal/safetext"
	"github.com/pgxha/pgxha/internal/secrets"
)

// scrubConnect returns err with the *pgconn.ConnectError at its head (what
// pgx returns for a failed connect) replaced by a copy whose Config holds
// no password: the error's text names none, but a tool that walks the
// chain (errors.As, a struct dump in an error reporter) would find it in
// Config.Password, a token from PasswordFunc included. Everything else of
// the error, its text and what it unwraps to, stays. Errors of other
// kinds are returned as they are.
//
// A server that received the password (in clear text, as the settings may
// allow) could echo it in what it says (the message, detail or hint of its
// error, a value an error quotes), which would reach NodeStatus, acquire
// errors and logs: what it said is cleared of it (see clearServerText),
// and when the error's text still holds it (but for pgx's own
// "user=...": a password that is also the user's name stands there), the
// error is replaced by a chain of the same texts without it (see
// clearChain).
func scrubConnect(err error) error {
	var ce *pgconn.ConnectError
	said := false
	if errors.As(err, &ce) && ce.Config != nil && ce.Config.Password != "" {
		// Cleared before it is cut: a cut through an echo would leave
		// all of the password but its last bytes.
		said = clearServerText(err, ce.Config.Password, 0)
	}
	boundServerText(err, 0)
	return scrubPassword(err, said)
}

// scrubPassword is scrubConnect but for the bound on texts; said tells
// that the server's text held the password (a text made of it before it
// was cleared may hold it still). When it did not, a short password that
// pgx's own text shows as a word ("1" in "127.0.0.1") is no echo, and the
// chain, with its types, is kept; a longer one is taken for an echo
// wherever it stands.
func scrubPassword(err error, said bool) error {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) || ce.Config == nil || ce.Config.Password == "" {
		return err
	}
	if pw := ce.Config.Password; (said || len(pw) >= minEverywhere) && echoed(err, ce.Config, pw) {
		return clearChain(err, pw, 0)
	}
	if head, ok := err.(*pgconn.ConnectError); ok {
		c := *head
		c.Config = head.Config.Copy()
		c.Config.Password = ""
		return &c
	}
	return &scrubbedError{err: err}
}

// scrubbedError stands for an error that holds a *pgconn.ConnectError
// deeper in its chain: its text is err's; errors.Is sees err's chain, and
// errors.As a chain in which the connect error holds no password.
type scrubbedError struct{ err error }

func (e *scrubbedError) Error() string { return e.err.Error() }

func (e *scrubbedError) Is(target error) bool { return errors.Is(e.err, target) }

func (e *scrubbedError) Unwrap() error {
	inner := errors.Unwrap(e.err)
	if inner == nil {
		return nil
	}
	return scrubPassword(inner, false)
}

// echoed clears pw out of what the server said in err's chain (see
// clearServerText) and reports whether err's text still holds it
// elsewhere than in pgx's own "user=... database=..." (a password that is
// also the user's name stands there), as in a text made from the
// server's before it was cleared.
func echoed(err error, cfg *pgconn.Config, pw string) bool {
	clearServerText(err, pw, 0)
	text := strings.Replace(err.Error(), "`user="+cfg.User+" database="+cfg.Database+"`", "", 1)
	return clearEcho(text, pw) != text
}

// clearResult takes pw out of the names and addresses a check read from
// the server (they reach NodeStatus, logs and metrics): a server that
// received it could name itself or its walsenders with it.
func clearResult(r *checker.Result, pw string) {
	if pw == "" {
		return
	}
	r.Name, r.UpstreamHost = clearName(r.Name, pw), clearEcho(r.UpstreamHost, pw)
	for i := range r.Replicas {
		x := &r.Replicas[i]
		x.ApplicationName, x.ClientAddr = clearEcho(x.ApplicationName, pw), clearEcho(x.ClientAddr, pw)
		x.State, x.SyncState = clearEcho(x.State, pw), clearEcho(x.SyncState, pw)
	}
}

// maxWalsenderName is how long a name the checker reports may be: a
// walsender's application_name as a master shows it (NAMEDATALEN - 1).
const maxWalsenderName = 63

// clearName takes pw out of a node's name as the checker reports it: a
// server's cluster_name or the application_name of its walreceiver, each
// byte outside printable ASCII written '?' (PostgreSQL 15 and before) or
// \xNN (16 on), and cut to maxWalsenderName bytes, before pgxha sees it.
// So pw is looked for in those forms too, and a cut name that ends with
// the beginning of one (six bytes or more of it, or all but its last byte
// of a shorter one) has that end cleared: the cut kept all of the password
// but its last bytes.
func clearName(name, pw string) string {
	forms := []string{pw}
	var q, x strings.Builder
	for i := 0; i < len(pw); i++ {
		if c := pw[i]; c >= 32 && c <= 126 {
			q.WriteByte(c)
			x.WriteByte(c)
		} else {
			q.WriteByte('?')
			fmt.Fprintf(&x, `\x%02x`, c)
		}
	}
	for _, f := range []string{q.String(), x.String()} {
		if !slices.Contains(forms, f) {
			forms = append(forms, f)
		}
	}
	if len(name) == maxWalsenderName {
		for _, f := range forms {
			for k := min(len(f)-1, len(name)); k >= min(6, len(f)-1) && k > 0; k-- {
				if strings.HasSuffix(name, f[:k]) {
					name = name[:len(name)-k] + "xxxxx"
					break
				}
			}
		}
	}
	for _, f := range forms {
		name = clearEcho(name, f)
	}
	return name
}

// clearEchoed returns err without pw anywhere in its text or in what a
// server said in its chain: for the errors of statements on a connection
// that authenticated with pw (a check), where a server could echo it in
// its error or in a value that an error quotes.
func clearEchoed(err error, pw string) error {
	if err == nil || pw == "" {
		boundServerText(err, 0)
		return boundText(err)
	}
	// Cleared before it is cut: a cut through an echo would leave all of
	// the password but its last bytes.
	clearServerText(err, pw, 0)
	boundServerText(err, 0)
	if clearEcho(err.Error(), pw) != err.Error() {
		return boundText(clearChain(err, pw, 0))
	}
	return boundText(err)
}

// maxErrorText bounds the text of a check's error (see boundText).
const maxErrorText = 8 << 10

// boundText returns a check's error err, or, when its text is longer than
// maxErrorText (the checker's errors quote what the server answered, read
// with a bound of maxStartupMessage), its chain rebuilt with each link's
// text cut (see rebuildChain): the *pgconn.PgError values stay, cut in
// place by boundServerText.
func boundText(err error) error {
	if err == nil || len(err.Error()) <= maxErrorText {
		return err
	}
	return rebuildChain(err, func(text string) string { return safetext.Clip(text, maxErrorText) }, 0)
}

// clearServerText takes pw out of every text field of the *pgconn.PgError
// values in err's chain, in place (the error was made for this connect or
// statement: nobody else holds it, and a field is written only when it
// changes, so that clearing it again writes nothing). At most 16 links
// deep.
func clearServerText(err error, pw string, depth int) (changed bool) {
	if err == nil || depth > 16 {
		return false
	}
	if pe, ok := err.(*pgconn.PgError); ok {
		for _, f := range []*string{&pe.Severity, &pe.SeverityUnlocalized, &pe.Code, &pe.Message, &pe.Detail,
			&pe.Hint, &pe.InternalQuery, &pe.Where, &pe.SchemaName, &pe.TableName, &pe.ColumnName,
			&pe.DataTypeName, &pe.ConstraintName, &pe.File, &pe.Routine} {
			if c := clearEcho(*f, pw); c != *f {
				*f = c
				changed = true
			}
		}
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		changed = clearServerText(u.Unwrap(), pw, depth+1) || changed
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			changed = clearServerText(e, pw, depth+1) || changed
		}
	}
	return changed
}

// clearChain returns err's chain with pw taken out of every text (the
// *pgconn.PgError values already cleared by clearServerText): each link
// that wraps others stands for the one it replaces with its text cleared
// and the links below it, and holds nothing of the original (no connect
// error's Config, no text made before the server's was cleared); a link
// that wraps nothing is kept as it is when its text does not hold pw (a
// sentinel such as context.DeadlineExceeded stays, for errors.Is), and the
// *pgconn.PgError values are kept, so that errors.As still finds the
// server's SQLSTATE. At most 16 links deep.
func clearChain(err error, pw string, depth int) error {
	return rebuildChain(err, func(text string) string { return clearEcho(text, pw) }, depth)
}

// rebuildChain is clearChain with fix made of each link's text.
func rebuildChain(err error, fix func(string) string, depth int) error {
	if err == nil || depth > 16 {
		return nil
	}
	if _, ok := err.(*pgconn.PgError); ok {
		return err
	}
	c := &clearedError{msg: fix(err.Error())}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		if next := rebuildChain(u.Unwrap(), fix, depth+1); next != nil {
			c.next = []error{next}
		}
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if next := rebuildChain(e, fix, depth+1); next != nil {
				c.next = append(c.next, next)
			}
		}
	default:
		if c.msg == err.Error() {
			return err
		}
	}
	return c
}

// clearedError is a link of clearChain's chain.
type clearedError struct {
	msg  string
	next []error
}

func (e *clearedError) Error() string { return e.msg }

func (e *clearedError) Unwrap() []error { return e.next }

// minEverywhere is the length from which a password is replaced wherever
// it stands in a text, not only where it stands whole (see clearEcho).
const minEverywhere = 6

// clearEcho replaces pw in text a server wrote: everywhere when it is long
// enough not to be part of ordinary words (a server may glue it to
// others), else where it stands as a whole value (see
// secrets.ReplaceWhole), so that the password "p" leaves "password" be.
//
// The forms in which quoting writes pw (a check's error quotes a value the
// server sent with %q, say) are replaced alike (see secrets.Escaped).
func clearEcho(text, pw string) string {
	if len(pw) >= minEverywhere {
		text = strings.ReplaceAll(text, pw, "xxxxx")
		for _, f := range secrets.Escaped(pw) {
			text = strings.ReplaceAll(text, f, "xxxxx")
		}
		return text
	}
	return secrets.ReplaceWhole(text, pw, "xxxxx")
}

// maxServerText bounds each text of a server's error that pgxha keeps and
// logs (NodeStatus.LastError, acquire errors, log lines): a server, a
// rogue one say, could send megabytes, up to the read bound.
const maxServerText = 2 << 10

// boundServerText cuts every text field of the *pgconn.PgError values in
// err's chain to maxServerText bytes (at a character's start, followed by
// how long it was), in place, as clearServerText clears them. At most 16
// links deep.
func boundServerText(err error, depth int) {
	if err == nil || depth > 16 {
		return
	}
	if pe, ok := err.(*pgconn.PgError); ok {
		for _, f := range []*string{&pe.Severity, &pe.SeverityUnlocalized, &pe.Code, &pe.Message, &pe.Detail,
			&pe.Hint, &pe.InternalQuery, &pe.Where, &pe.SchemaName, &pe.TableName, &pe.ColumnName,
			&pe.DataTypeName, &pe.ConstraintName, &pe.File, &pe.Routine} {
			if len(*f) > maxServerText+64 { // not one cut already: it says the length it had
				*f = safetext.Clip(*f, maxServerText)
			}
		}
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		boundServerText(u.Unwrap(), depth+1)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			boundServerText(e, depth+1)
		}
	}
}
