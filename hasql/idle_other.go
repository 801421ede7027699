//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package hasql

import "syscall"

// socketReadable is not known on this system without a read that may
// block: idle connections are checked by pgxpool's ping alone.
func socketReadable(syscall.RawConn) bool { return false }
