package hasql

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// scrubConnect returns err with the *pgconn.ConnectError at its head (what
// pgx returns for a failed connect) replaced by a copy whose Config holds
// no password: the error's text names none, but a tool that walks the
// chain (errors.As, a struct dump in an error reporter) would find it in
// Config.Password, a token from PasswordFunc included. Everything else of
// the error, its text and what it unwraps to, stays. Errors of other
// kinds are returned as they are.
func scrubConnect(err error) error {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) || ce.Config == nil || ce.Config.Password == "" {
		return err
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
