package hasql

import (
	"encoding/binary"
	"testing"
)

// A connection dialed as a cancel request's sends one, or TLS first; a
// startup message (a connection made without its connect context) is
// refused.
func TestCancelOrTLS(t *testing.T) {
	msg := func(code uint32, n int) []byte {
		b := make([]byte, n)
		binary.BigEndian.PutUint32(b[0:4], uint32(n))
		binary.BigEndian.PutUint32(b[4:8], code)
		return b
	}
	for _, c := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"cancel request", msg(80877102, 16), true},
		{"cancel request, long key", msg(80877102, 44), true},
		{"SSLRequest", msg(80877103, 8), true},
		{"direct TLS handshake", []byte{0x16, 0x03, 0x01, 0x00, 0x10}, true},
		{"startup message 3.0", msg(196608, 40), false},
		{"startup message 3.2", msg(196610, 40), false},
		{"GSSENCRequest", msg(80877104, 8), false},
		{"short", []byte{0, 0, 0}, false},
	} {
		if got := cancelOrTLS(c.b); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
