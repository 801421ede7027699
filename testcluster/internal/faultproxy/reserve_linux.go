//go:build linux

package faultproxy

import (
	"io"
	"net"
	"os"
	"syscall"
)

// soReusePort lets the listener and the reservation share the address.
const soReusePort = 0xf

// listenConfig listens with SO_REUSEPORT, so that the listener can share its
// address with the reservation (only sockets that both set it, of the same
// user, may share).
var listenConfig = net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soReusePort, 1)
	}); err != nil {
		return err
	}
	return serr
}}

// reserve binds a socket to addr that never listens: it keeps the port while
// the proxy's listener is closed, and connects get refused meanwhile, as with
// a crashed server.
func reserve(addr *net.TCPAddr) (io.Closer, error) {
	domain, sa := syscall.AF_INET, syscall.Sockaddr(nil)
	if ip4 := addr.IP.To4(); ip4 != nil {
		s4 := &syscall.SockaddrInet4{Port: addr.Port}
		copy(s4.Addr[:], ip4)
		sa = s4
	} else {
		domain = syscall.AF_INET6
		s6 := &syscall.SockaddrInet6{Port: addr.Port}
		copy(s6.Addr[:], addr.IP.To16())
		sa = s6
	}
	fd, err := syscall.Socket(domain, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, soReusePort, 1); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "faultproxy-reservation"), nil
}
