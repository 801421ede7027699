package main

import (
	"context"
	"net/http"

	"github.com/pgxha/pgxha/hasql"
)

// This file is the part to copy: HTTP middleware that gives each user
// read-your-writes across requests and service instances with a cookie.

// TokenCookie is the cookie that carries a user's read-your-writes token.
const TokenCookie = "pgxha_token"

type tokenKey struct{}

// ReadYourWrites reads the token of the request's cookie into its context
// (see Reads), and after a request that may have written (any method but
// GET, HEAD and OPTIONS) and succeeded (a status below 400), takes the
// master's token and sets the cookie to it, merged with the one the request
// brought. Handlers commit before they write their response, as usual: the
// token is taken when the response's header is written.
func ReadYourWrites(m *hasql.Manager, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var tok hasql.Token
		if c, err := r.Cookie(TokenCookie); err == nil {
			// A cookie is user input: a token that does not parse is
			// ignored, as if there were none.
			if t, err := hasql.ParseToken(c.Value); err == nil {
				tok = t
			}
		}
		r = r.WithContext(context.WithValue(r.Context(), tokenKey{}, tok))
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
		default:
			next.ServeHTTP(&tokenWriter{ResponseWriter: w, r: r, m: m, tok: tok}, r)
		}
	})
}

// Reads returns the Querier for a request's reads: replicas that have the
// user's last write (the master when none has within TokenWait), plain
// replicas for a user who wrote nothing.
func Reads(m *hasql.Manager, r *http.Request) *hasql.Querier {
	tok, _ := r.Context().Value(tokenKey{}).(hasql.Token)
	return m.Replica(hasql.After(tok))
}

// ForgetToken clears the cookie: after hasql.ErrWriteLost (the user's last
// write was lost in a failover: tell them) or hasql.ErrTokenForeign (a
// cookie of another cluster).
func ForgetToken(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: TokenCookie, Path: "/", MaxAge: -1})
}

// tokenWriter sets the cookie just before the response's header goes out.
type tokenWriter struct {
	http.ResponseWriter
	r      *http.Request
	m      *hasql.Manager
	tok    hasql.Token
	header bool
}

func (w *tokenWriter) WriteHeader(code int) {
	if !w.header {
		w.header = true
		if code < 400 {
			w.setCookie()
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *tokenWriter) Write(b []byte) (int, error) {
	if !w.header {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *tokenWriter) setCookie() {
	tok, err := w.m.Token(w.r.Context())
	if err != nil {
		// The write is done; without a token the user's next read may
		// be stale for a moment, never wrong.
		return
	}
	http.SetCookie(w.ResponseWriter, &http.Cookie{
		Name: TokenCookie, Value: w.tok.Merge(tok).String(), Path: "/",
		MaxAge: 600, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	})
}
