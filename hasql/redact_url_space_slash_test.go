package hasql_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/pgxha/pgxha/hasql"
)

// A URL whose password holds a space and a '/' (a passphrase, a password
// from base64 with a space typed into it), quoted in a text beside
// another connection string: the user information up to its '@' is a
// password and goes.
func TestRedactURLPasswordWithSpaceAndSlash(t *testing.T) {
	dsn := "postgres://app:pw1@h1/db"
	for _, tc := range []struct{ in, want string }{
		{"standby postgres://rep:ab/cd ef@h2:5432/db failed", "standby postgres://rep:xxxxx@h2:5432/db failed"},
		{"standby postgres://rep:ab cd/ef@h2:5432/db failed", "standby postgres://rep:xxxxx@h2:5432/db failed"},
	} {
		assert.Equal(t, tc.want, hasql.Redact(dsn, tc.in))
	}
}

// A URL with a port and no path and no password, then, on the same line,
// words and an '@' of their own: nothing is a password, all stays.
func TestRedactKeepsTextAfterURLWithPortAndNoPath(t *testing.T) {
	dsn := "postgres://app:pw1@h1/db"
	for _, in := range []string{
		"node postgres://h2:5432 refused: permission denied for role app@corp",
		"node postgres://[::1]:5432 down, paged dba@example.com",
	} {
		assert.Equal(t, in, hasql.Redact(dsn, in))
	}
}
