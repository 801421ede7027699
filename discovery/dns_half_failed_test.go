package discovery_test

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
)

// halfFailingDNS is a tiny DNS server of the test's own: it answers A queries with
// a4 and AAAA queries with a6, or with SERVFAIL while failAAAA is set (a
// resolver that times out or fails one of the two queries of a dual-stack
// lookup, as an overloaded or half-broken DNS server does).
type halfFailingDNS struct {
	udp      net.PacketConn
	tcp      net.Listener
	a4       [][4]byte
	a6       [][16]byte
	failAAAA atomic.Bool
	wg       sync.WaitGroup
}

func newHalfFailingDNS(t *testing.T, a4 [][4]byte, a6 [][16]byte) *halfFailingDNS {
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &halfFailingDNS{udp: udp, tcp: tcp, a4: a4, a6: a6}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 1500)
		for {
			k, from, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := s.answer(buf[:k]); out != nil {
				udp.WriteTo(out, from)
			}
		}
	}()
	go func() {
		defer s.wg.Done()
		for {
			c, err := tcp.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				serveDNSStream(c, s.answer)
			}()
		}
	}()
	t.Cleanup(func() { udp.Close(); tcp.Close(); s.wg.Wait() })
	return s
}

func (s *halfFailingDNS) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		if network == "tcp" || network == "tcp4" || network == "tcp6" {
			return d.DialContext(ctx, "tcp", s.tcp.Addr().String())
		}
		return d.DialContext(ctx, "udp", s.udp.LocalAddr().String())
	}}
}

// answer builds the reply to the query q (nil when q is no query).
func (s *halfFailingDNS) answer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil
	}
	// The question: labels, then type and class.
	i := 12
	for i < len(q) && q[i] != 0 {
		i += int(q[i]) + 1
	}
	if i+5 > len(q) {
		return nil
	}
	qend := i + 5
	qtype := binary.BigEndian.Uint16(q[i+1 : i+3])
	out := make([]byte, 12, 512)
	copy(out[0:2], q[0:2])
	flags := uint16(0x8000 | 0x0400 | 0x0080) // response, authoritative, recursion available
	flags |= binary.BigEndian.Uint16(q[2:4]) & 0x0100
	var rdatas [][]byte
	switch qtype {
	case 1:
		for _, a := range s.a4 {
			rdatas = append(rdatas, a[:])
		}
	case 28:
		if s.failAAAA.Load() {
			flags |= 2 // SERVFAIL
		} else {
			for _, a := range s.a6 {
				rdatas = append(rdatas, a[:])
			}
		}
	}
	binary.BigEndian.PutUint16(out[2:4], flags)
	binary.BigEndian.PutUint16(out[4:6], 1)
	binary.BigEndian.PutUint16(out[6:8], uint16(len(rdatas)))
	out = append(out, q[12:qend]...)
	for _, rd := range rdatas {
		out = append(out, 0xC0, 0x0C) // the question's name
		out = binary.BigEndian.AppendUint16(out, qtype)
		out = binary.BigEndian.AppendUint16(out, 1)
		out = binary.BigEndian.AppendUint32(out, 1)
		out = binary.BigEndian.AppendUint16(out, uint16(len(rd)))
		out = append(out, rd...)
	}
	return out
}

// A dual-stack name (a node on IPv4, another on IPv6) whose AAAA query
// fails for a moment (SERVFAIL, a timeout): the look failed, so the last
// good set must stay (DNS's doc: "a discoverer that fails keeps the last
// good set"). Go's resolver, unless StrictErrors is set, answers such a
// lookup with the addresses of the query that succeeded and no error: the
// Discoverer reported a set without the IPv6 node, and the Manager removed
// it (and cut its connections, had it been the master).
func TestDNSLookWithAFailedQueryKeepsTheSet(t *testing.T) {
	v6 := [16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	srv := newHalfFailingDNS(t, [][4]byte{{10, 9, 0, 1}}, [][16]byte{v6})
	d, err := discovery.NewDNS(discovery.DNSConfig{Name: "db.pgxha.test.", Port: 5432, Interval: time.Hour,
		MinInterval: time.Millisecond, Timeout: 5 * time.Second, Resolver: srv.resolver()})
	require.NoError(t, err)
	w := watch(t, d)
	w.waitFor("the dual-stack set", addrsAre("10.9.0.1:5432", "[fd00::1]:5432"))

	srv.failAAAA.Store(true)
	d.Refresh()
	// The look ends with a State (an error, or a set): wait for it.
	st := w.waitFor("the look with the AAAA query failing", func(s discovery.State) bool {
		return len(w.all()) > 1
	})
	assert.Error(t, st.Err, "a look whose AAAA query failed is a failed look, not a good set")
	assert.Equal(t, []string{"10.9.0.1:5432", "[fd00::1]:5432"}, addrs(st.Nodes), "the last good set stays")
}
