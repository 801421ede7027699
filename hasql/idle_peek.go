//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package hasql

import "syscall"

// socketReadable peeks at the socket without blocking: data waiting, or the
// end of the stream, or an error (reset) make it readable; nothing to read
// yet (EAGAIN) does not.
func socketReadable(raw syscall.RawConn) bool {
	var buf [1]byte
	readable := false
	err := raw.Read(func(fd uintptr) bool {
		k, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
		case err != nil, k >= 0:
			readable = true
		}
		return true // done: never wait for the socket
	})
	return readable || err != nil
}
