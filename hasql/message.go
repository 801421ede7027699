package hasql

import (
	"io"
	"os"
	"reflect"
	"sync"

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
// set bounds messages as the user chose, and is left as it is. pgx's own
// is pgproto3.NewFrontend, or, before v5.9, a function of pgconn's that
// calls it (the one ParseConfig sets).
func isPgxFrontend(build pgconn.BuildFrontendFunc) bool {
	if build == nil {
		return true
	}
	p := reflect.ValueOf(build).Pointer()
	return p == reflect.ValueOf(pgconn.BuildFrontendFunc(pgproto3.NewFrontend)).Pointer() || p == pgconnFrontend()
}

// pgconnFrontend is the code pointer of the BuildFrontend pgconn's
// ParseConfig sets (0 when it cannot tell), read once.
var pgconnFrontend = sync.OnceValue(func() uintptr {
	cfg, err := pgconn.ParseConfig("host=localhost sslmode=disable passfile=" + os.DevNull)
	if err != nil || cfg.BuildFrontend == nil {
		return 0
	}
	return reflect.ValueOf(cfg.BuildFrontend).Pointer()
})
