//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package hasql

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// socketReadable never waits for another reader of the socket: pgx's
// background reader (started when a write is slow) may be blocked in a read
// of an idle pooled connection, holding the socket's read lock, when the
// connection is next acquired and its socket looked at.
func TestSocketReadableBesideABlockedReader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	server, err := ln.Accept()
	require.NoError(t, err)
	defer server.Close()
	raw, err := client.(syscall.Conn).SyscallConn()
	require.NoError(t, err)

	read := make(chan struct{})
	go func() {
		defer close(read)
		var b [1]byte
		client.Read(b[:]) // blocks: nothing to read yet
	}()
	// The reader is blocked once a peek finds nothing and the socket
	// stays quiet; socketReadable must answer whether or not it is.
	answered := make(chan bool, 1)
	go func() {
		for range 100 {
			if socketReadable(raw) {
				answered <- true
				return
			}
		}
		answered <- false
	}()
	select {
	case r := <-answered:
		require.False(t, r, "nothing was sent")
	case <-time.After(30 * time.Second):
		t.Fatal("socketReadable waits for the blocked reader")
	}
	_, err = server.Write([]byte{'Z'})
	require.NoError(t, err)
	<-read
}
