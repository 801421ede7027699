package main

import (
	"io"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/pgxha/pgxha/internal/secrets"
)

// redactedPassword replaces the password wherever it would be printed, as
// hasql does in its own errors.
const redactedPassword = "xxxxx"

// redactor removes the password of a connection string from text that is
// about to be printed. The zero redactor changes nothing.
//
// A password that is also a word the output uses for something else (the
// user or database name, a host, the command's own name or vocabulary, such
// as "postgres" or "pgxha") is replaced only where it stands as a password:
// in a URL's user information and after password=. Replacing it everywhere
// would mangle "pgxha: no master" or "user=postgres database=postgres", and
// would tell the reader what the password is ("user=xxxxx"). Any other
// password is replaced wherever it stands as a whole value.
type redactor struct {
	secrets []string        // longest first
	common  map[string]bool // secrets that are also words of the output
}

// newRedactor finds the passwords in connStrings (the URL's user
// information, a password parameter, a keyword/value password, in every
// spelling they may take there) and in PGPASSWORD. Strings that are not
// connection strings add nothing.
func newRedactor(connStrings ...string) redactor {
	var secrets []string
	add := func(s string) {
		if s != "" && !slices.Contains(secrets, s) {
			secrets = append(secrets, s)
		}
	}
	for _, cs := range connStrings {
		for _, pw := range passwordsOf(cs) {
			add(pw)
			add(url.QueryEscape(pw))
			add(url.PathEscape(pw))
		}
	}
	add(os.Getenv("PGPASSWORD"))
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	words := outputWords(connStrings)
	common := map[string]bool{}
	for _, s := range secrets {
		if words[s] {
			common[s] = true
		}
	}
	return redactor{secrets: secrets, common: common}
}

// vocabulary is what the command prints of its own: its name, commands,
// roles and column headings.
var vocabulary = strings.Fields(`pgxha status watch master sync async quorum replica
	detached stale unknown down suspect address name role state timeline lsn lag bytes time
	check error errors paused split brain postgres postgresql`)

// outputWords returns the words the output may show that are not secrets:
// the user, database and host names of connStrings (and of the environment
// pgx reads them from), and the command's vocabulary.
func outputWords(connStrings []string) map[string]bool {
	words := map[string]bool{}
	for _, w := range vocabulary {
		words[w] = true
	}
	add := func(ws ...string) {
		for _, w := range ws {
			if w != "" {
				words[w] = true
			}
		}
	}
	add(os.Getenv("PGUSER"), os.Getenv("PGDATABASE"), os.Getenv("PGHOST"), os.Getenv("USER"))
	for _, cs := range connStrings {
		if rest, ok := cutScheme(cs); ok {
			if u, err := url.Parse(cs); err == nil {
				add(u.User.Username(), strings.TrimPrefix(u.Path, "/"))
				q := u.Query()
				add(q.Get("user"), q.Get("dbname"))
				for _, h := range strings.Split(q.Get("host")+","+u.Host, ",") {
					host, _, _ := strings.Cut(h, ":")
					add(host)
				}
			} else if at := strings.LastIndex(rest, "@"); at >= 0 {
				user, _, _ := strings.Cut(rest[:at], ":")
				add(user)
			}
			continue
		}
		add(conninfoValues(cs, "user")...)
		add(conninfoValues(cs, "dbname")...)
		for _, hosts := range conninfoValues(cs, "host") {
			add(strings.Split(hosts, ",")...)
		}
	}
	return words
}

// String returns s with every secret replaced by xxxxx: where it stands as
// a whole value (see secrets.ReplaceWhole), or, for a secret that is also a
// word of the output, where it stands as a password (see replacePassword).
func (r redactor) String(s string) string {
	for _, secret := range r.secrets {
		if r.common[secret] {
			s = replacePassword(s, secret, redactedPassword)
		} else {
			s = secrets.ReplaceWhole(s, secret, redactedPassword)
		}
	}
	return s
}

// replacePassword replaces secret in text where it stands as a password:
// between ':' and '@' (a URL's user information), or as the value of
// password= (spaces around '=' and a quote allowed, any letter case).
func replacePassword(text, secret, with string) string {
	var b strings.Builder
	rest := text
	for {
		i := strings.Index(rest, secret)
		if i < 0 {
			b.WriteString(rest)
			return b.String()
		}
		before := b.String() + rest[:i]
		after := rest[i+len(secret):]
		inURL := strings.HasSuffix(before, ":") && strings.HasPrefix(after, "@")
		key := strings.TrimRight(strings.TrimSuffix(strings.TrimRight(before, " "), "'"), " ")
		key, hasEq := strings.CutSuffix(key, "=")
		asValue := hasEq && strings.HasSuffix(strings.ToLower(strings.TrimRight(key, " ")), "password")
		b.WriteString(rest[:i])
		if inURL || asValue {
			b.WriteString(with)
		} else {
			b.WriteString(secret)
		}
		rest = after
	}
}

// Writer returns a writer that redacts each Write before passing it to w.
// Each Write must carry whole lines (slog handlers write one record per
// call), so that a secret is never split between two writes.
func (r redactor) Writer(w io.Writer) io.Writer { return redactingWriter{r: r, w: w} }

type redactingWriter struct {
	r redactor
	w io.Writer
}

func (rw redactingWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(rw.w, rw.r.String(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// passwordsOf returns every password connString holds, as written and
// decoded, best effort: a connection string too broken to parse still has
// its likely password found.
func passwordsOf(connString string) []string {
	var out []string
	if rest, ok := cutScheme(connString); ok {
		// The user information as written: between the scheme and the last
		// '@' of the authority.
		authority := rest
		if i := strings.IndexAny(authority, "/?#"); i >= 0 {
			authority = authority[:i]
		}
		if at := strings.LastIndex(authority, "@"); at >= 0 {
			if _, pw, ok := strings.Cut(authority[:at], ":"); ok {
				out = append(out, pw)
				if dec, err := url.PathUnescape(pw); err == nil {
					out = append(out, dec)
				}
			}
		}
		if u, err := url.Parse(connString); err == nil {
			if pw, ok := u.User.Password(); ok {
				out = append(out, pw)
			}
			out = append(out, u.Query()["password"]...)
		} else if at := strings.LastIndex(rest, "@"); at >= 0 {
			// Not a valid URL: maybe a password holding '/', '?' or '#'
			// unescaped.
			if _, pw, ok := strings.Cut(rest[:at], ":"); ok {
				out = append(out, pw)
			}
		}
		if _, query, ok := strings.Cut(connString, "?"); ok {
			for _, kv := range strings.Split(query, "&") {
				if k, v, ok := strings.Cut(kv, "="); ok && k == "password" {
					out = append(out, v)
					if dec, err := url.QueryUnescape(v); err == nil {
						out = append(out, dec)
					}
				}
			}
		}
		return out
	}
	return conninfoValues(connString, "password")
}

func cutScheme(s string) (string, bool) {
	for _, scheme := range []string{"postgres://", "postgresql://"} {
		if rest, ok := strings.CutPrefix(s, scheme); ok {
			return rest, true
		}
	}
	return "", false
}

// conninfoValues returns every value of key in a keyword/value connection
// string (key=value pairs, values optionally single-quoted with backslash
// escapes), both as written and unquoted.
func conninfoValues(conninfo, key string) []string {
	var out []string
	s := conninfo
	for range len(conninfo) + 1 { // each pass consumes at least one byte
		s = strings.TrimLeft(s, " \t\n\r")
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			break
		}
		k := strings.TrimSpace(s[:eq])
		s = strings.TrimLeft(s[eq+1:], " \t\n\r")
		var raw string
		var v strings.Builder
		if strings.HasPrefix(s, "'") {
			i := 1
			for i < len(s) && s[i] != '\'' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				v.WriteByte(s[i])
				i++
			}
			raw = s[1:i]
			s = s[min(i+1, len(s)):]
		} else {
			// A backslash takes the next character as it is, a space
			// among them (libpq's reading).
			i := 0
			for i < len(s) && !strings.ContainsRune(" \t\n\r", rune(s[i])) {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				v.WriteByte(s[i])
				i++
			}
			raw = s[:i]
			s = s[i:]
		}
		if k == key {
			// As written, as libpq and pgx read it, and as pgx v5.8 does
			// (only \\ and \' unescaped).
			out = append(out, raw, v.String(), strings.NewReplacer(`\\`, `\`, `\'`, `'`).Replace(raw))
		}
	}
	return out
}
