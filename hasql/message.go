package hasql

import (
	"io"
	"reflect"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// maxStartupMessage bounds a message read by a check connection, and by
// any connection before the server has authenticated: a check's answers
// are small (a walsender list of thousands of replicas fits), and a
// server in the set, vouched for or not, must not make the Manager read a
// message of a gigabyte (pgx's own bound) into memory, into a node's error
// and into its logs.
const maxStartupMessage = 4 << 20

// pgxMaxMessage is pgproto3's own bound on a message, restored on a pool
// connection once it is connected.
const pgxMaxMessage = 0x3fffffff - 1

// maxPreAuthMessage bounds a message read while the connection is made,
// until it is ready (an error, an authentication request, a parameter, a
// notice): a server's refusal of megabytes fails the connect with pgx's
// short "invalid body length" instead, and what pgx makes of a refusal (a
// text it keeps, beyond the fields of the server's error that
// boundServerText cuts) stays this small. Authentication tokens (GSSAPI
// with a large ticket) fit; a notice of more at login (one quoting a
// setting of hundreds of KiB) fails the connect.
const maxPreAuthMessage = 256 << 10

// boundedFrontend wraps build (nil: pgx's) so that the frontends it makes
// read messages of at most maxPreAuthMessage; a connection raises its
// bound once ready (maxStartupMessage for a check connection or a
// Listener's, pgxMaxMessage for a pool's, before its ValidateConnect).
func boundedFrontend(build pgconn.BuildFrontendFunc) pgconn.BuildFrontendFunc {
	if build == nil {
		build = pgproto3.NewFrontend
	}
	return func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		f := build(r, w)
		f.SetMaxBodyLen(maxPreAuthMessage)
		return f
	}
}

// isPgxFrontend reports whether build is pgx's own (or none): one the user
// set bounds messages as the user chose, and is left as it is.
func isPgxFrontend(build pgconn.BuildFrontendFunc) bool {
	return build == nil || reflect.ValueOf(build).Pointer() == reflect.ValueOf(pgconn.BuildFrontendFunc(pgproto3.NewFrontend)).Pointer()
}
