// Package readmesnippets holds what the snippets of README.md and docs/ use
// without making it, where their prose says it comes from.
// TestReadmeCompiles builds each snippet as a file of this package.
package readmesnippets

import (
	"net/http"

	"github.com/pgxha/pgxha/hasql"
)

// From docs/read-your-writes.md, whose middleware is the one of
// examples/tokens.
const TokenCookie = "pgxha_token"

type tokenKey struct{}

type wroteKey struct{}

type tokenWriter struct {
	http.ResponseWriter
	tok   hasql.Token
	wrote hasql.Token
}
