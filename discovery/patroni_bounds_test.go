package discovery_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
)

// An API that answers with a status line of megabytes (Go's client takes
// up to 10 MB of headers) and escape codes in it: the look's error, which
// the Manager keeps in Stat and logs, quotes a bounded, escaped part.
func TestPatroniHugeStatusLine(t *testing.T) {
	addr := statusLineServer(t, "503 "+strings.Repeat("A", 5<<20)+"\x1b[2J")
	p := newPatroni(t, "http://"+addr)
	w := watch(t, p)
	st := w.waitFor("err", func(s discovery.State) bool { return s.Err != nil })
	require.Less(t, len(st.Err.Error()), 4<<10,
		"the look's error holds %d bytes of the server's status line", len(st.Err.Error()))
	assert.Contains(t, st.Err.Error(), "503 AAAA")
	assert.NotContains(t, st.Err.Error(), "\x1b")
}

// statusLineServer serves HTTP on loopback, answering every request with
// status (the code and the text after it, as written) and no body. It
// returns its address; it stops at t's end.
func statusLineServer(t *testing.T, status string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				fmt.Fprintf(c, "HTTP/1.1 %s\r\nContent-Length: 0\r\n\r\n", status)
			}()
		}
	}()
	return l.Addr().String()
}
