package hasql_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/pgxha/pgxha/hasql"
)

// A URL without a password, then, on the same line, text with an '@' of
// its own (another URL's userinfo, a role named like an address): only
// passwords go; the first URL's port and the words after it stay.
func TestRedactKeepsTextAfterURLWithoutPassword(t *testing.T) {
	dsn := "postgres://app:pw1@h1/db"
	for _, tc := range []struct{ in, want string }{
		{
			"patroni: http://10.0.0.1:8008 refused; trying http://admin:apisecret@10.0.0.2:8008",
			"patroni: http://10.0.0.1:8008 refused; trying http://admin:xxxxx@10.0.0.2:8008",
		},
		{
			"node postgres://h2:5432/db: permission denied for role app@corp",
			"node postgres://h2:5432/db: permission denied for role app@corp",
		},
	} {
		assert.Equal(t, tc.want, hasql.Redact(dsn, tc.in))
	}
}
