package hasql

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// libpqURL is a postgres:// URL split the way libpq splits it
// (conninfo_uri_parse_options in fe-connect.c), which Go's net/url does not
// do for libpq's own extensions: a comma-separated host list, IPv6 literals
// in it ([::1]:5001,[::1]:5002) and percent-encoded hosts (%2Ftmp%2Fpg, a
// Unix socket directory).
type libpqURL struct {
	scheme   string // "postgres://" or "postgresql://"
	userinfo string // percent-encoded as net/url reads it, with its '@'; "" when absent
	hosts    []string
	ports    []string // as written, "" for an implied port; one per host
	rest     string   // "/path?query", "?query" or ""
}

// isURL reports whether s is a connection string in URL form.
func isURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// splitLibpqURL splits s, a connection string in URL form. Hosts are
// percent-decoded; nothing else is.
func splitLibpqURL(s string) (libpqURL, error) {
	var u libpqURL
	scheme := "postgres://"
	if strings.HasPrefix(s, "postgresql://") {
		scheme = "postgresql://"
	}
	u.scheme = scheme
	p := s[len(scheme):]
	// As in libpq, the user information ends at the first '@' before any
	// '/'.
	if i := strings.IndexAny(p, "@/"); i >= 0 && p[i] == '@' {
		u.userinfo, p = encodeUserinfo(p[:i]), p[i+1:]
	}
	end := strings.IndexAny(p, "/?")
	if end < 0 {
		end = len(p)
	}
	list := p[:end]
	u.rest = p[end:]
	// An '@' left in the host list or the path is most likely a password's
	// '@', '/', '?' or '#' written unencoded: libpq would read part of the
	// password as a host, a port or the database name, and show it in
	// errors and status lines. Refused, without showing any of it.
	path, _, _ := strings.Cut(u.rest, "?")
	if strings.Contains(list, "@") || strings.Contains(path, "@") {
		return u, errAmbiguousUserinfo
	}
	// An '@' further on (in the query) may be a password's too: values are
	// not shown in errors then.
	show := func(v string) string { return strconv.Quote(v) }
	if strings.Contains(u.rest, "@") {
		show = func(string) string { return "(not shown: the URL has an '@' past its user information)" }
	}
	if list == "" {
		return u, nil
	}
	for i, elem := range strings.Split(list, ",") {
		host, port := elem, ""
		if strings.HasPrefix(elem, "[") {
			close := strings.IndexByte(elem, ']')
			if close < 0 {
				return u, fmt.Errorf("hasql: host %s at position %d: no ']' closes the IPv6 address", show(elem), i+1)
			}
			host = elem[1:close]
			switch after := elem[close+1:]; {
			case after == "":
			case after[0] == ':':
				port = after[1:]
			default:
				return u, fmt.Errorf("hasql: host %s at position %d: want [address] or [address]:port", show(elem), i+1)
			}
			if host == "" {
				return u, fmt.Errorf("hasql: empty IPv6 address at position %d of %s", i+1, show(list))
			}
		} else if c := strings.IndexByte(elem, ':'); c >= 0 {
			host, port = elem[:c], elem[c+1:]
		}
		dec, err := uriDecode(host)
		if err != nil {
			return u, fmt.Errorf("hasql: host at position %d of the URL: %w", i+1, err)
		}
		if dec == "" {
			return u, fmt.Errorf("hasql: empty host at position %d of %s", i+1, show(list))
		}
		if strings.Contains(dec, ",") {
			return u, fmt.Errorf("hasql: host at position %d of the URL holds an encoded comma: a host name cannot", i+1)
		}
		if port, err = uriDecode(port); err != nil {
			return u, fmt.Errorf("hasql: port at position %d of the URL: %w", i+1, err)
		}
		if port != "" {
			if _, err := strconv.ParseUint(port, 10, 16); err != nil {
				return u, fmt.Errorf("hasql: invalid port %s at position %d of the URL's hosts: want a number from 1 to 65535", show(port), i+1)
			}
		}
		u.hosts = append(u.hosts, dec)
		u.ports = append(u.ports, port)
	}
	return u, nil
}

// errAmbiguousUserinfo is the error for a URL with an '@' past its user
// information, before the query.
var errAmbiguousUserinfo = errors.New("hasql: connection string: an '@' in the host list or the database name: " +
	"percent-encode '@', '/', '?' and '#' in a password (%40, %2F, %3F, %23) and '@' in a database name (%40)")

// encodeUserinfo returns a URL's user information (without its '@') with
// the user and the password percent-encoded the way net/url reads them,
// and its '@': a password may hold '#' or '?' unencoded, which libpq
// takes as they are and net/url would not. An escape that does not decode
// is taken as written.
func encodeUserinfo(raw string) string {
	user, pw, hasPw := strings.Cut(raw, ":")
	dec := func(v string) string {
		if d, err := url.PathUnescape(v); err == nil {
			return d
		}
		return v
	}
	if !hasPw {
		return url.User(dec(user)).String() + "@"
	}
	return url.UserPassword(dec(user), dec(pw)).String() + "@"
}

// queryForm returns the URL with its host list moved to host and port
// query parameters, a form every pgconn version and net/url parse alike.
// With no host list it returns the URL as it was. A host or port parameter
// of the URL's own takes precedence over the host list, as in libpq: the
// hosts (or ports) of the list are then dropped.
func (u libpqURL) queryForm() string {
	if len(u.hosts) == 0 {
		return u.scheme + u.userinfo + u.rest
	}
	path, query, hasQuery := strings.Cut(u.rest, "?")
	var q url.Values
	if hasQuery {
		q, _ = url.ParseQuery(query) // an error is the parser's to report
	}
	var add []string
	if !q.Has("host") {
		add = append(add, "host="+queryEscape(strings.Join(u.hosts, ",")))
		if !q.Has("port") {
			if ports := u.portList(); ports != "" {
				add = append(add, "port="+queryEscape(ports))
			}
		}
	}
	if hasQuery && query != "" {
		add = append(add, query)
	}
	if len(add) == 0 {
		return u.scheme + u.userinfo + path
	}
	return u.scheme + u.userinfo + path + "?" + strings.Join(add, "&")
}

// portList is the port parameter for the host list: none when no host has
// a port, every port when each has one, and the default port (PGPORT or
// 5432) made explicit for the others when only some have one, since pgconn
// pairs the ports it is given with the first hosts.
func (u libpqURL) portList() string {
	with := 0
	for _, p := range u.ports {
		if p != "" {
			with++
		}
	}
	if with == 0 {
		return ""
	}
	def := os.Getenv("PGPORT")
	if def == "" || strings.Contains(def, ",") {
		def = "5432"
	}
	ports := make([]string, len(u.ports))
	for i, p := range u.ports {
		ports[i] = p
		if p == "" {
			ports[i] = def
		}
	}
	return strings.Join(ports, ",")
}

// queryEscape escapes s for a query value that libpq and net/url decode
// alike: a space is %20 (libpq does not read '+' as a space).
func queryEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

// uriDecode decodes a component of a URL as libpq does
// (conninfo_uri_decode): %XX escapes, spaces around the value ignored,
// spaces inside it and %00 refused.
func uriDecode(raw string) (string, error) {
	s := strings.Trim(raw, " ")
	if strings.Contains(s, " ") {
		return "", errors.New("unexpected space: write it as %20")
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return "", errors.New("bad percent-encoding")
		}
		c := unhex(s[i+1])<<4 | unhex(s[i+2])
		if c == 0 {
			return "", errors.New("%00 is not allowed")
		}
		b.WriteByte(c)
		i += 2
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// urlPassword returns the password of a connection string in URL form: the
// user information's, else the password parameter's.
func urlPassword(s string) string {
	u, err := splitLibpqURL(s)
	if err == nil {
		if _, pw, ok := strings.Cut(strings.TrimSuffix(u.userinfo, "@"), ":"); ok {
			if dec, err := url.PathUnescape(pw); err == nil {
				return dec
			}
			return pw
		}
		if _, query, ok := strings.Cut(u.rest, "?"); ok {
			if q, err := url.ParseQuery(query); err == nil {
				return q.Get("password")
			}
		}
	}
	// Unparsable: what sits between the user and the last '@'.
	rest := s[strings.Index(s, "://")+3:]
	if at := strings.LastIndex(rest, "@"); at > 0 {
		if _, pw, ok := strings.Cut(rest[:at], ":"); ok {
			return pw
		}
	}
	return ""
}
