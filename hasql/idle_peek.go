//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package hasql

import "syscall"

// socketReadable peeks at the socket without blocking: data waiting, or the
// end of the stream, or an error (reset) make it readable; nothing to read
// yet (EAGAIN) does not. It peeks through Control, not Read: Read would wait
// for the socket's read lock, which pgx's background reader (started when a
// write is slow) may hold, blocked in a read of the idle connection, for as
// long as the server stays quiet.
func socketReadable(raw syscall.RawConn) bool {
	var buf [1]byte
	readable := false
	err := raw.Control(func(fd uintptr) {
		k, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
		case err != nil, k >= 0:
			readable = true
		}
	})
	return readable || err != nil
}
