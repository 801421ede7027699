//go:build !pgxold

// From pgx v5.13 on, pgconn parses URLs exactly as libpq does; older pgx
// does not (`make test` runs the tests against the oldest supported pgx too,
// with the pgxold tag, which leaves this file out).

package hasql_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgxha/pgxha/hasql"
)

// FuzzURLHostsAsLibpq: the hosts and ports ParseConfig finds in a URL are
// those libpq finds, as pgconn v5.13's libpq-exact parser reads them.
func FuzzURLHostsAsLibpq(f *testing.F) {
	for _, s := range []string{
		"u@%2Ftmp%2Fpg/db",
		"u:p@[::1]:5001,[::1]:5002/db",
		"u@h1:6000,h2,h3:6001/db",
		"u@[::1],h2:5002,[2001:db8::7]:5003/db?sslmode=disable",
		"u@%2Ftmp:5001,h2:5002/db",
		"u@h9/db?host=h1,h2&port=5001,5002",
		"h1,h2/db?port=5001",
		"/db?host=%2Ftmp",
		"h1,h2/db?application_name=a@b",
		"u:p%40ss@h1/db",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		dsn := "postgres://" + s
		want, err := pgconn.ParseConfig(dsn)
		if err != nil {
			return
		}
		cfg, err := hasql.ParseConfig(dsn)
		if err != nil {
			return // hasql refuses more (empty and duplicate hosts, ...)
		}
		var libpq []string
		for _, fb := range append([]*pgconn.FallbackConfig{{Host: want.Host, Port: want.Port}}, want.Fallbacks...) {
			if a := fmt.Sprintf("%s|%d", fb.Host, fb.Port); !slices.Contains(libpq, a) {
				libpq = append(libpq, a)
			}
		}
		var got []string
		for _, n := range cfg.Nodes {
			got = append(got, fmt.Sprintf("%s|%d", n.Host, n.Port))
		}
		if !slices.Equal(got, libpq) {
			t.Fatalf("%q: hosts %s, libpq's %s", dsn, strings.Join(got, " "), strings.Join(libpq, " "))
		}
		if pw := want.Password; pw != "" && len(pw) > 3 && strings.Contains(hasql.Redact(dsn, "error: "+pw+"."), pw) {
			t.Fatalf("%q: Redact leaves the password %q", dsn, pw)
		}
	})
}
