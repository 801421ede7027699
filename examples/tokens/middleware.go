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

type wroteKey struct{}

// ReadYourWrites reads the token of the request's cookie into its context
// (see Reads), and after a request that wrote (a handler called Wrote) and
// succeeded (a status below 400), sets the cookie to the write's token,
// merged with the one the request brought. Handlers commit before they
// write their response, as usual: the cookie is set when the response's
// header is written.
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
			tw := &tokenWriter{ResponseWriter: w, tok: tok}
			next.ServeHTTP(tw, r.WithContext(context.WithValue(r.Context(), wroteKey{}, &tw.wrote)))
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

// Wrote records the token of a write the request made, read on the
// connection that made it: from Querier.ExecToken, or hasql.CommitToken
// for a transaction. (A token read afterwards with m.Token names whichever
// node is master then: after a failover that lost the write, the new one,
// and the user's next read would not learn of the loss.)
func Wrote(r *http.Request, tok hasql.Token) {
	if p, ok := r.Context().Value(wroteKey{}).(*hasql.Token); ok {
		*p = p.Merge(tok)
	}
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
	tok    hasql.Token // the request's
	wrote  hasql.Token // its writes' (see Wrote)
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
	if w.wrote.IsZero() {
		return // nothing written, or its token could not be read: the write is done, the next read may be stale for a moment
	}
	http.SetCookie(w.ResponseWriter, &http.Cookie{
		Name: TokenCookie, Value: w.tok.Merge(w.wrote).String(), Path: "/",
		MaxAge: 600, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	})
}
