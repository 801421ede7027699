package hasql

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Connects to a node whose server refused the credentials back off from
// authBackoffInitial, doubling with jitter, to authBackoffMax: a rotated
// secret that became right is picked up within authBackoffMax.
const (
	authBackoffInitial = 250 * time.Millisecond
	authBackoffMax     = 5 * time.Second
)

// AuthError is what a connect to a node gets while the node's connects back
// off after an authentication or authorization failure: no login was
// attempted. It unwraps to the server's *pgconn.PgError.
type AuthError struct {
	// Addr is the node.
	Addr string
	// Code is the SQLSTATE of the failure: 28P01 (wrong password), 28000
	// (no pg_hba.conf entry, a role that may not log in), 3D000 (no such
	// database) or 42501 (no CONNECT privilege).
	Code string
	// RetryAt is when the next connect to the node may log in.
	RetryAt time.Time
	// Err is the server's error at the last failed login.
	Err error
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("hasql: %s refused the credentials (SQLSTATE %s), next login attempt in %s: %v",
		e.Addr, e.Code, time.Until(e.RetryAt).Round(time.Millisecond), e.Err)
}

func (e *AuthError) Unwrap() error { return e.Err }

// authFailureCode returns the SQLSTATE of an authentication or
// authorization failure at connect, "" for any other error.
func authFailureCode(err error) string {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return ""
	}
	switch pgErr.Code {
	case "28P01", "28000", "3D000", "42501":
		return pgErr.Code
	}
	return ""
}

// authGate holds a node's connects back after the server refused its
// credentials: while it is closed, connects fail at once with an
// *AuthError, and one connect is let through per backoff interval, whoever
// makes it (the check, the pool, Listen, DB). A successful connect opens
// it. Safe for concurrent use.
type authGate struct {
	mu      sync.Mutex // no I/O while held
	b       *backoff.ExponentialBackOff
	failing *pgconn.PgError // the last failure; nil: open
	code    string
	next    time.Time // no login before
	since   time.Time // failing since
}

// allow returns nil when a connect may log in now, and the *AuthError to
// fail it with otherwise. A connect let through while the gate is closed
// holds the next slot until it reports.
func (g *authGate) allow(addr string, now time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failing == nil {
		return nil
	}
	if now.Before(g.next) {
		return &AuthError{Addr: addr, Code: g.code, RetryAt: g.next, Err: g.failing}
	}
	g.next = now.Add(g.b.MaxInterval) // this one's: the others wait for its outcome
	return nil
}

// failed records a connect that failed with err. It reports whether the
// failure is new or of another kind than the last one (for the log).
func (g *authGate) failed(err error, now time.Time) (changed bool, code string, retryAt time.Time) {
	code = authFailureCode(err)
	if code == "" {
		return false, "", time.Time{}
	}
	var pgErr *pgconn.PgError
	errors.As(err, &pgErr)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.b == nil {
		g.b = backoff.NewExponentialBackOff()
		g.b.InitialInterval = authBackoffInitial
		g.b.MaxInterval = authBackoffMax
		g.b.Multiplier = 2
		g.b.RandomizationFactor = 0.3
		g.b.MaxElapsedTime = 0 // never stops: bounded by MaxInterval per attempt
	}
	changed = g.failing == nil || g.code != code
	if g.failing == nil {
		g.b.Reset()
		g.since = now
	}
	g.failing, g.code = pgErr, code
	g.next = now.Add(g.b.NextBackOff())
	return changed, code, g.next
}

// succeeded opens the gate; it reports whether it was closed.
func (g *authGate) succeeded() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	was := g.failing != nil
	g.failing, g.code = nil, ""
	return was
}

// state returns the last failure, with when the next login may be tried;
// nil when the gate is open.
func (g *authGate) state(addr string) *AuthError {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failing == nil {
		return nil
	}
	return &AuthError{Addr: addr, Code: g.code, RetryAt: g.next, Err: g.failing}
}

// connected records the outcome of a login to n: a failure of the
// credentials closes the gate (logged once per change, with the node and
// the SQLSTATE), a success opens it (logged when it was closed). Other
// failures (the server down, a timeout) leave it as it is.
func (n *node) connected(err error) {
	if err == nil {
		if n.auth.succeeded() {
			n.m.log.Info("pgxha: the node accepts the credentials again", "addr", n.cfg.Addr)
		}
		return
	}
	if changed, code, at := n.auth.failed(err, time.Now()); changed {
		n.m.log.Warn("pgxha: the node refused the credentials; connects to it back off until one succeeds",
			"addr", n.cfg.Addr, "sqlstate", code, "next_attempt", at.Format(time.RFC3339Nano), "err", err)
	}
}

// connectTraced is the nodeTracer's part in the auth gate and the lost
// connection report: a connection that connected is live (its failures
// from now on are the node's, see trackedConn), and the outcome is
// recorded.
func (n *node) connectTraced(conn *pgx.Conn, err error, pooled bool) {
	if err == nil && conn != nil {
		if tc := trackedOf(conn); tc != nil {
			if pooled {
				n.setEnd(tc) // a *sql.DB's connections have database/sql's lifetime
			}
			tc.live.Store(true)
		}
	}
	n.connected(scrubConnect(err)) // logged, and kept by the gate
}
