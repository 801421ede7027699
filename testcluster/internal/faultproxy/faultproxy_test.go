package faultproxy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgxha/pgxha/testcluster/internal/faultproxy"
)

func TestForwardsBothWays(t *testing.T) {
	s := startServer(t, bannerEcho("hello from upstream\n"))
	p := newProxy(t, s.Addr())
	require.True(t, strings.HasPrefix(p.Addr(), "127.0.0.1:"), p.Addr())

	c := dial(t, p.Addr())
	readExactly(t, c, "hello from upstream\n")
	roundTrip(t, c, "ping")

	// A payload much larger than a chunk, written while reading.
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	writeErr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		writeErr <- err
	}()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(patience)))
	got := make([]byte, len(payload))
	_, err := io.ReadFull(c, got)
	require.NoError(t, err)
	require.NoError(t, <-writeErr)
	require.True(t, bytes.Equal(payload, got), "payload corrupted")
	require.Equal(t, 1, p.ActiveConnections())
}

func TestManyConcurrentConnections(t *testing.T) {
	s := startServer(t, echo)
	p := newProxy(t, s.Addr())

	const n = 32
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dial(t, p.Addr())
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				msg := fmt.Sprintf("conn %d message %d;", i, j)
				if !assert.NoError(t, c.SetDeadline(time.Now().Add(patience))) {
					return
				}
				if _, err := io.WriteString(c, msg); !assert.NoError(t, err) {
					return
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); !assert.NoError(t, err) {
					return
				}
				assert.Equal(t, msg, string(got))
			}
		}()
	}
	wg.Wait()
	require.Equal(t, n, p.ActiveConnections())

	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	require.Eventually(t, func() bool { return p.ActiveConnections() == 0 }, patience, 5*time.Millisecond)
}

func TestPartitionHoldsBytes(t *testing.T) {
	s := startServer(t, echo)
	p := newProxy(t, s.Addr())

	old := dial(t, p.Addr())
	roundTrip(t, old, "before;")
	require.EqualValues(t, 1, s.accepted.Load())
	received := s.received.Load()

	p.Partition()
	require.True(t, p.Partitioned())
	write(t, old, "held-1;")
	write(t, old, "held-2;")
	requireSilence(t, old)
	require.Equal(t, received, s.received.Load(), "the upstream received bytes during the partition")

	fresh := dial(t, p.Addr()) // accepted although partitioned
	write(t, fresh, "fresh;")
	requireSilence(t, fresh)
	require.EqualValues(t, 1, s.accepted.Load(), "the upstream was dialed during the partition")
	require.Equal(t, received, s.received.Load(), "the upstream received bytes during the partition")
	require.Equal(t, 2, p.ActiveConnections())

	p.Heal()
	require.False(t, p.Partitioned())
	readExactly(t, old, "held-1;held-2;")
	readExactly(t, fresh, "fresh;")
	roundTrip(t, old, "after;")
	roundTrip(t, fresh, "after;")
	require.EqualValues(t, 2, s.accepted.Load())
}

func TestPartitionStopsReadingAndKeepsOrder(t *testing.T) {
	type result struct {
		written int
		err     error
	}
	ready := make(chan struct{})
	start := make(chan struct{})
	results := make(chan result, 1)
	const limit = 256 << 20 // far beyond any socket buffer; reaching it means unbounded buffering
	s := startServer(t, func(s *server, c net.Conn) {
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return
		}
		close(ready)
		select {
		case <-start:
		case <-s.quit:
			return
		}
		buf := make([]byte, 64<<10)
		written := 0
		var err error
		for written < limit {
			for i := range buf {
				buf[i] = byte((written + i) % 251)
			}
			if err = c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
				break
			}
			var n int
			n, err = c.Write(buf)
			written += n
			if err != nil {
				break
			}
		}
		results <- result{written, err}
	})
	p := newProxy(t, s.Addr())

	c := dial(t, p.Addr())
	write(t, c, "g")
	select {
	case <-ready: // the connection works end to end
	case <-time.After(patience):
		t.Fatal("the server did not receive the first byte")
	}

	p.Partition()
	close(start)
	var r result
	select {
	case r = <-results:
	case <-time.After(30 * time.Second):
		t.Fatal("the server never blocked: the proxy keeps reading during a partition")
	}
	require.Truef(t, isTimeout(r.err), "the server's writes should block; got %v after %d bytes", r.err, r.written)
	require.Less(t, r.written, 64<<20, "the proxy buffered without bound")
	requireSilence(t, c)

	// The server has closed its side; after Heal every byte arrives, in
	// order, then EOF.
	p.Heal()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, r.written, len(got))
	for i, b := range got {
		if b != byte(i%251) {
			t.Fatalf("byte %d is %d, want %d", i, b, byte(i%251))
		}
	}
}

func TestPartitionHidesUpstreamClose(t *testing.T) {
	s := startServer(t, park)
	p := newProxy(t, s.Addr())

	c := dial(t, p.Addr())
	sc := nextConn(t, s)
	write(t, sc, "hi")
	readExactly(t, c, "hi")

	p.Partition()
	require.NoError(t, sc.Close())
	requireSilence(t, c) // no EOF
	p.Heal()
	requireEOF(t, c)
}

func TestPartitionHidesClientCloseAndReset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(t *testing.T, c net.Conn)
		check func(t *testing.T, c net.Conn)
	}{
		{"close", func(t *testing.T, c net.Conn) { require.NoError(t, c.Close()) }, requireEOF},
		{"reset", resetClose, requireReset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, park)
			p := newProxy(t, s.Addr())

			c := dial(t, p.Addr())
			sc := nextConn(t, s)
			roundTripVia(t, c, sc, "x")

			p.Partition()
			tc.close(t, c)
			requireSilence(t, sc)
			p.Heal()
			tc.check(t, sc)
			require.NoError(t, sc.Close())
			require.Eventually(t, func() bool { return p.ActiveConnections() == 0 }, patience, 5*time.Millisecond)
		})
	}
}

// roundTripVia sends msg from a to b and back through the proxy.
func roundTripVia(t *testing.T, a, b net.Conn, msg string) {
	t.Helper()
	write(t, a, msg)
	readExactly(t, b, msg)
	write(t, b, msg)
	readExactly(t, a, msg)
}

func TestEndsPropagate(t *testing.T) {
	s := startServer(t, park)
	p := newProxy(t, s.Addr())

	t.Run("half close", func(t *testing.T) {
		c := dial(t, p.Addr())
		sc := nextConn(t, s)
		require.NoError(t, c.(*net.TCPConn).CloseWrite())
		requireEOF(t, sc)
		// The other direction still works until the server closes.
		write(t, sc, "bye")
		readExactly(t, c, "bye")
		require.NoError(t, sc.Close())
		requireEOF(t, c)
	})
	t.Run("client reset", func(t *testing.T) {
		c := dial(t, p.Addr())
		sc := nextConn(t, s)
		roundTripVia(t, c, sc, "x")
		resetClose(t, c)
		requireReset(t, sc)
	})
	t.Run("upstream reset", func(t *testing.T) {
		c := dial(t, p.Addr())
		sc := nextConn(t, s)
		roundTripVia(t, c, sc, "x")
		resetClose(t, sc)
		requireReset(t, c)
	})
	require.Eventually(t, func() bool { return p.ActiveConnections() == 0 }, patience, 5*time.Millisecond)
}

func TestRefuse(t *testing.T) {
	s := startServer(t, echo)
	p := newProxy(t, s.Addr())
	addr := p.Addr()

	c := dial(t, addr)
	roundTrip(t, c, "ping")

	p.Refuse(true)
	requireReset(t, c)
	requireRefused(t, addr)
	require.Zero(t, p.ActiveConnections())
	require.Equal(t, addr, p.Addr())

	p.Refuse(true) // again: still refused
	requireRefused(t, addr)

	p.Refuse(false)
	require.NoError(t, p.Err())
	require.Equal(t, addr, p.Addr())
	c2 := dial(t, addr)
	roundTrip(t, c2, "back")

	// Again, now that the port was used twice.
	p.Refuse(true)
	requireReset(t, c2)
	requireRefused(t, addr)
	p.Refuse(false)
	roundTrip(t, dial(t, addr), "back again")
}

func TestPartitionWinsOverRefuse(t *testing.T) {
	s := startServer(t, echo)
	p := newProxy(t, s.Addr())
	addr := p.Addr()

	t.Run("refuse during partition", func(t *testing.T) {
		c := dial(t, addr)
		roundTrip(t, c, "ping")
		received := s.received.Load()

		p.Partition()
		p.Refuse(true)
		write(t, c, "held")
		requireSilence(t, c) // hangs, no reset
		c2 := dial(t, addr)  // still accepted
		write(t, c2, "held")
		requireSilence(t, c2)

		p.Heal() // the crash applies now, nothing held is delivered
		requireReset(t, c)
		requireReset(t, c2)
		requireRefused(t, addr)
		require.Equal(t, received, s.received.Load())
		require.Zero(t, p.ActiveConnections())
	})
	t.Run("partition while refusing", func(t *testing.T) {
		requireRefused(t, addr)
		p.Partition() // listens again: connect and hang
		c := dial(t, addr)
		write(t, c, "x")
		requireSilence(t, c)
		require.Equal(t, 1, p.ActiveConnections())

		p.Heal()
		requireReset(t, c)
		requireRefused(t, addr)
	})
	t.Run("recover", func(t *testing.T) {
		p.Refuse(false)
		require.NoError(t, p.Err())
		roundTrip(t, dial(t, addr), "ping")
	})
}

func TestRefuseFalseDuringPartition(t *testing.T) {
	s := startServer(t, echo)
	p := newProxy(t, s.Addr())

	p.Refuse(true)
	requireRefused(t, p.Addr())
	p.Partition()
	c := dial(t, p.Addr())
	p.Refuse(false)
	write(t, c, "x")
	requireSilence(t, c)
	p.Heal()
	readExactly(t, c, "x")
}

func TestNewFailsOnBusyAddress(t *testing.T) {
	s := startServer(t, echo)
	p, err := faultproxy.New(s.Addr(), s.Addr())
	require.Error(t, err)
	require.Nil(t, p)
}

func TestUpstreamDown(t *testing.T) {
	s := startServer(t, echo)
	p := newProxy(t, s.Addr())
	s.StopListening()

	start := time.Now()
	c, err := net.DialTimeout("tcp", p.Addr(), patience)
	if err == nil {
		// Usually the reset comes after the connection is established; it
		// may also beat the dial's own check of the connection.
		t.Cleanup(func() { _ = c.Close() })
		require.NoError(t, c.SetReadDeadline(time.Now().Add(2*time.Second)))
		_, err = c.Read(make([]byte, 1))
	}
	require.Truef(t, errors.Is(err, syscall.ECONNRESET), "want a reset, got %v", err)
	require.Less(t, time.Since(start), time.Second)
	require.Zero(t, p.ActiveConnections())

	// Another upstream: later connections work.
	s2 := startServer(t, echo)
	p.SetUpstream(s2.Addr())
	roundTrip(t, dial(t, p.Addr()), "ping")
}

func TestUpstreamDownDuringPartition(t *testing.T) {
	s := startServer(t, echo)
	p := newProxy(t, s.Addr())
	s.StopListening()

	p.Partition()
	c := dial(t, p.Addr())
	requireSilence(t, c)
	p.Heal()
	requireReset(t, c)
}

func TestSetUpstream(t *testing.T) {
	a := startServer(t, bannerEcho("A"))
	b := startServer(t, bannerEcho("B"))
	p := newProxy(t, a.Addr())

	ca := dial(t, p.Addr())
	readExactly(t, ca, "A")
	p.SetUpstream(b.Addr())
	cb := dial(t, p.Addr())
	readExactly(t, cb, "B")
	roundTrip(t, ca, "still A")
	require.EqualValues(t, len("still A"), a.received.Load())
	require.Zero(t, b.received.Load())

	// A connection accepted during a partition dials the upstream in force
	// at Heal.
	p.Partition()
	cc := dial(t, p.Addr())
	p.SetUpstream(a.Addr())
	p.Heal()
	readExactly(t, cc, "A")
}

func TestLatency(t *testing.T) {
	s := startServer(t, echo)
	p := newProxy(t, s.Addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, "warm up")

	const latency = 50 * time.Millisecond
	p.SetLatency(latency)
	start := time.Now()
	roundTrip(t, c, "ping")
	delayed := time.Since(start)
	require.GreaterOrEqual(t, delayed, 2*latency)

	// Many small writes keep their order.
	var want strings.Builder
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&want, "m%03d;", i)
	}
	writeErr := make(chan error, 1)
	go func() {
		for i := 0; i < 500; i++ {
			if _, err := fmt.Fprintf(c, "m%03d;", i); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	}()
	readExactly(t, c, want.String())
	require.NoError(t, <-writeErr)

	p.SetLatency(0)
	start = time.Now()
	roundTrip(t, c, "ping")
	require.Less(t, time.Since(start), 2*latency)
	require.Less(t, time.Since(start), delayed)
}

func TestLatencyAppliesToServerWrites(t *testing.T) {
	s := startServer(t, park)
	p := newProxy(t, s.Addr())
	c := dial(t, p.Addr())
	sc := nextConn(t, s)
	roundTripVia(t, c, sc, "warm up")

	p.SetLatency(100 * time.Millisecond)
	start := time.Now()
	write(t, sc, "late")
	readExactly(t, c, "late")
	require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)
}

func TestResetConnections(t *testing.T) {
	s := startServer(t, park)
	p := newProxy(t, s.Addr())

	c1 := dial(t, p.Addr())
	sc1 := nextConn(t, s)
	c2 := dial(t, p.Addr())
	sc2 := nextConn(t, s)
	roundTripVia(t, c1, sc1, "one")
	roundTripVia(t, c2, sc2, "two")
	require.Equal(t, 2, p.ActiveConnections())

	p.ResetConnections()
	require.Zero(t, p.ActiveConnections())
	requireReset(t, c1)
	requireReset(t, c2)
	requireEOF(t, sc1) // the upstream side is closed normally
	requireEOF(t, sc2)

	c3 := dial(t, p.Addr())
	sc3 := nextConn(t, s)
	roundTripVia(t, c3, sc3, "three")
}

func TestCloseWithOpenConnectionsDuringPartition(t *testing.T) {
	s := startServer(t, echo)
	p, err := faultproxy.New("127.0.0.1:0", s.Addr())
	require.NoError(t, err)

	var conns []net.Conn
	for i := 0; i < 4; i++ {
		c := dial(t, p.Addr())
		roundTrip(t, c, "ping")
		conns = append(conns, c)
	}
	p.SetLatency(time.Hour)
	write(t, conns[0], "delayed for an hour")
	p.Partition()
	write(t, conns[1], "held")
	conns = append(conns, dial(t, p.Addr())) // waits for Heal to dial

	requireClosesPromptly(t, p)
	for _, c := range conns {
		err := readEnd(t, c)
		require.Error(t, err)
	}
	require.Zero(t, p.ActiveConnections())
	requireRefused(t, p.Addr())
	require.NoError(t, p.Close()) // idempotent

	s.Close()
	goleak.VerifyNone(t)
}

func TestCloseWithBlockedWriter(t *testing.T) {
	s := startServer(t, park) // never reads
	p, err := faultproxy.New("127.0.0.1:0", s.Addr())
	require.NoError(t, err)

	c := dial(t, p.Addr())
	nextConn(t, s)
	// Fill every buffer on the way: a write times out once the proxy's
	// writer is blocked writing to the server.
	buf := make([]byte, 1<<20)
	for total := 0; ; {
		require.Less(t, total, 256<<20, "the proxy buffered without bound")
		require.NoError(t, c.SetWriteDeadline(time.Now().Add(500*time.Millisecond)))
		n, err := c.Write(buf)
		total += n
		if err != nil {
			require.Truef(t, isTimeout(err), "want a write timeout, got %v", err)
			break
		}
	}

	requireClosesPromptly(t, p)
	s.Close()
	goleak.VerifyNone(t)
}

func TestMethodsAfterClose(t *testing.T) {
	s := startServer(t, echo)
	p, err := faultproxy.New("127.0.0.1:0", s.Addr())
	require.NoError(t, err)
	require.NoError(t, p.Close())

	p.Partition()
	p.Refuse(true)
	p.Refuse(false)
	p.Heal()
	p.SetLatency(time.Millisecond)
	p.SetUpstream(s.Addr())
	p.ResetConnections()
	require.Zero(t, p.ActiveConnections())
	requireRefused(t, p.Addr())
	require.NoError(t, p.Close())
	require.NoError(t, p.Err())
}

func TestConcurrentFaults(t *testing.T) {
	s := startServer(t, echo)
	p, err := faultproxy.New("127.0.0.1:0", s.Addr())
	require.NoError(t, err)

	// Clients report every attempt on ticks, which paces the faults.
	stop := make(chan struct{})
	ticks := make(chan bool)
	var wg sync.WaitGroup
	var stopOnce sync.Once
	stopClients := func() {
		stopOnce.Do(func() { close(stop) })
		wg.Wait()
	}
	defer stopClients()
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ok := false
				c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
				if err == nil {
					_ = c.SetDeadline(time.Now().Add(20 * time.Millisecond))
					if _, err := io.WriteString(c, "traffic"); err == nil {
						_, err = io.ReadFull(c, make([]byte, 7))
						ok = err == nil
					}
					_ = c.Close()
				}
				select {
				case ticks <- ok:
				case <-stop:
					return
				}
			}
		}()
	}
	faults := []func(){
		p.Partition, p.Heal,
		func() { p.Refuse(true) }, func() { p.Refuse(false) },
		p.ResetConnections,
		func() { p.SetLatency(time.Millisecond) }, func() { p.SetLatency(0) },
		func() { p.SetUpstream(s.Addr()) },
	}
	for i := 0; i < 400; i++ {
		faults[(i*7+i/len(faults))%len(faults)]()
		<-ticks
	}
	// Once the faults are lifted, traffic flows again.
	p.Heal()
	p.Refuse(false)
	p.SetLatency(0)
	require.NoError(t, p.Err())
	deadline := time.After(patience)
	for succeeded := 0; succeeded < 20; {
		select {
		case ok := <-ticks:
			if ok {
				succeeded++
			}
		case <-deadline:
			t.Fatalf("only %d round trips succeeded after the faults were lifted", succeeded)
		}
	}
	requireClosesPromptly(t, p)
	stopClients()
	s.Close()
	goleak.VerifyNone(t)
}

// requireClosesPromptly requires p.Close to return nil within 2 s.
func requireClosesPromptly(t *testing.T, p *faultproxy.Proxy) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not return within 2s")
	}
}

func TestRefusingKeepsThePort(t *testing.T) {
	up := startServer(t, echo)
	p := newProxy(t, up.Addr())
	p.Refuse(true)
	_, err := net.DialTimeout("tcp", p.Addr(), time.Second)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	other, err := net.Listen("tcp", p.Addr())
	if err == nil {
		other.Close()
	}
	require.Error(t, err, "no other program can take the port while the proxy refuses")
	p.Refuse(false)
	require.NoError(t, p.Err())
	c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
	require.NoError(t, err)
	c.Close()
}
