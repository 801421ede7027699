package hasql

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgxha/pgxha/internal/secrets"
)

// scrubConnect returns err with the *pgconn.ConnectError at its head (what
// pgx returns for a failed connect) replaced by a copy whose Config holds
// no password: the error's text names none, but a tool that walks the
// chain (errors.As, a struct dump in an error reporter) would find it in
// Config.Password, a token from PasswordFunc included. Everything else of
// the error, its text and what it unwraps to, stays. Errors of other
// kinds are returned as they are.
//
// A server that received the password (in clear text, as the settings may
// allow) could echo it in its error message, which would reach NodeStatus,
// acquire errors and logs: such an error is replaced by a chain of the
// same texts without it (see clearChain).
func scrubConnect(err error) error {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) || ce.Config == nil || ce.Config.Password == "" {
		return err
	}
	if text := err.Error(); clearEcho(text, ce.Config.Password) != text {
		return clearChain(err, ce.Config.Password, 0)
	}
	if head, ok := err.(*pgconn.ConnectError); ok {
		c := *head
		c.Config = head.Config.Copy()
		c.Config.Password = ""
		return &c
	}
	return &scrubbedError{err: err}
}

// scrubbedError stands for an error that holds a *pgconn.ConnectError
// deeper in its chain: its text is err's; errors.Is sees err's chain, and
// errors.As a chain in which the connect error holds no password.
type scrubbedError struct{ err error }

func (e *scrubbedError) Error() string { return e.err.Error() }

func (e *scrubbedError) Is(target error) bool { return errors.Is(e.err, target) }

func (e *scrubbedError) Unwrap() error {
	inner := errors.Unwrap(e.err)
	if inner == nil {
		return nil
	}
	return scrubConnect(inner)
}

// clearChain returns err's chain with pw taken out of every text: each
// link stands for the one it replaces (its text cleared, errors.Is as the
// original's), but for the *pgconn.PgError values, which are kept with
// their fields cleared in place (the error was made for this failed
// connect: nobody else holds it), so that errors.As still finds the
// server's SQLSTATE. Nothing in the result holds pw: no connect error's
// Config, no text made before it was cleared. At most 16 links deep.
func clearChain(err error, pw string, depth int) error {
	if err == nil || depth > 16 {
		return nil
	}
	if pe, ok := err.(*pgconn.PgError); ok {
		for _, f := range []*string{&pe.Severity, &pe.SeverityUnlocalized, &pe.Code, &pe.Message, &pe.Detail,
			&pe.Hint, &pe.InternalQuery, &pe.Where, &pe.SchemaName, &pe.TableName, &pe.ColumnName,
			&pe.DataTypeName, &pe.ConstraintName, &pe.File, &pe.Routine} {
			*f = clearEcho(*f, pw)
		}
		return pe
	}
	c := &clearedError{msg: clearEcho(err.Error(), pw), orig: err}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		if next := clearChain(u.Unwrap(), pw, depth+1); next != nil {
			c.next = []error{next}
		}
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if next := clearChain(e, pw, depth+1); next != nil {
				c.next = append(c.next, next)
			}
		}
	}
	return c
}

// clearedError is a link of clearChain's chain.
type clearedError struct {
	msg  string
	orig error // for errors.Is only: its text and chain may hold the password
	next []error
}

func (e *clearedError) Error() string { return e.msg }

func (e *clearedError) Unwrap() []error { return e.next }

func (e *clearedError) Is(target error) bool { return errors.Is(e.orig, target) }

// clearEcho replaces pw in text a server wrote: everywhere when it is long
// enough not to be part of ordinary words (a server may glue it to
// others), else where it stands as a whole value (see
// secrets.ReplaceWhole), so that the password "p" leaves "password" be.
func clearEcho(text, pw string) string {
	if len(pw) >= 6 {
		return strings.ReplaceAll(text, pw, "xxxxx")
	}
	return secrets.ReplaceWhole(text, pw, "xxxxx")
}
