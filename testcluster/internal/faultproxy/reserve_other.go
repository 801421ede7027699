//go:build !linux

package faultproxy

import (
	"io"
	"net"
)

// listenConfig is the plain one where ports cannot be reserved.
var listenConfig net.ListenConfig

// reserve does nothing here: while refusing, the port is free.
func reserve(*net.TCPAddr) (io.Closer, error) { return io.NopCloser(nil), nil }
