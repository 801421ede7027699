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
type redactor struct {
	secrets []string // longest first
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
	return redactor{secrets: secrets}
}

// String returns s with every secret replaced by xxxxx where it stands as
// a whole value (see secrets.ReplaceWhole).
func (r redactor) String(s string) string {
	for _, secret := range r.secrets {
		s = secrets.ReplaceWhole(s, secret, redactedPassword)
	}
	return s
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
			end := strings.IndexAny(s, " \t\n\r")
			if end < 0 {
				end = len(s)
			}
			raw = s[:end]
			v.WriteString(raw)
			s = s[end:]
		}
		if k == key {
			out = append(out, raw, v.String())
		}
	}
	return out
}
