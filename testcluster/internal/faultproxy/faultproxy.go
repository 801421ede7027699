// Package faultproxy implements a TCP proxy that injects network faults
// between clients and a server: network partitions (black holes), latency,
// connection resets and refused connections (a crashed server).
//
// A Proxy listens on one address and forwards every accepted connection to an
// upstream address. It is meant for tests on the loopback interface.
//
// Every goroutine belongs to the Proxy and ends on Close: one accept loop
// while the listener is open, and per connection a setup goroutine, which
// waits until the proxy is not partitioned, dials the upstream side and
// starts four goroutines before it returns. Per direction, a reader reads a
// chunk (at most 32 KiB), timestamps it and hands it to a writer through a
// small bounded queue; the writer waits until the chunk is due (see
// SetLatency), then until the proxy is not partitioned (the gate), then
// writes it. A reader does not start a read while the proxy is partitioned,
// so a partition holds only the chunks already read. The end of a direction
// travels through the same queue and the same gate, so a partition hides
// closes and resets as well as bytes: a clean EOF becomes a half close (FIN)
// of the other side, an error a TCP reset of both sides. A connection is
// closed when both directions have ended cleanly, or at the first error.
package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// chunkSize is the largest chunk a reader reads at once.
	chunkSize = 32 << 10
	// queueLen is the capacity of the queue between the reader and the
	// writer of one direction.
	queueLen = 4
	// dialTimeout bounds the dial of the upstream side of a connection.
	dialTimeout = 5 * time.Second
	// relistenAttempts and relistenInterval bound the retries of the bind
	// when the listener is opened again on its address.
	relistenAttempts = 50
	relistenInterval = 20 * time.Millisecond
	// maxAcceptBackoff bounds the pause after a transient accept error.
	maxAcceptBackoff = time.Second
)

// Proxy is a TCP proxy with fault injection. Create one with New and release
// it with Close. All methods are safe for concurrent use.
type Proxy struct {
	addr    string
	ctx     context.Context // cancelled by Close; parent of every upstream dial
	cancel  context.CancelFunc
	wg      sync.WaitGroup // every goroutine the proxy starts
	latency atomic.Int64   // time.Duration

	// ctl serializes the state changes that open or close the listener or
	// reset connections (Partition, Heal, Refuse, Close). Goroutines of the
	// proxy never take it.
	ctl sync.Mutex

	mu          sync.Mutex
	upstream    string
	partitioned bool
	healed      chan struct{} // closed when the current partition ends
	refusing    bool
	closed      bool
	ln          net.Listener  // nil while the listener is closed
	lnStop      chan struct{} // closed to stop the accept loop of ln
	lnDone      chan struct{} // closed when the accept loop of ln returned
	conns       map[*conn]struct{}
	listenErr   error
	// reserved holds the address for the proxy's life, bound but never
	// listening: while the listener is closed, connects are refused and no
	// other program can take the port.
	reserved io.Closer
}

// New listens on listenAddr ("127.0.0.1:0" picks a free port) and forwards
// every accepted connection to upstream.
func New(listenAddr, upstream string) (*Proxy, error) {
	ln, err := listenConfig.Listen(context.Background(), "tcp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen on %s: %w", listenAddr, err)
	}
	reserved, err := reserve(ln.Addr().(*net.TCPAddr))
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("faultproxy: reserve %s: %w", ln.Addr(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		addr:     ln.Addr().String(),
		ctx:      ctx,
		cancel:   cancel,
		upstream: upstream,
		conns:    make(map[*conn]struct{}),
		reserved: reserved,
	}
	p.startAccepting(ln)
	return p, nil
}

// Addr returns the address the proxy listens on, such as "127.0.0.1:5432".
// It stays the same for the life of the proxy, also while the proxy refuses
// connections. It is safe for concurrent use.
func (p *Proxy) Addr() string { return p.addr }

// SetUpstream makes connections that dial their upstream side from now on
// dial addr. Connections already forwarded are not affected; connections
// accepted during a partition dial when the partition heals, so they use the
// upstream in force at that time. It is safe for concurrent use.
func (p *Proxy) SetUpstream(addr string) {
	p.mu.Lock()
	p.upstream = addr
	p.mu.Unlock()
}

// Partition black-holes the proxy, like a network partition: no byte flows in
// either direction on existing or new connections, and no close, EOF or reset
// of either side reaches the other side. New connections are still accepted
// but their upstream side is not dialed until Heal. Bytes the proxy already
// read are held and delivered, in order, after Heal; the proxy stops reading
// a socket while its outgoing direction is held. If the proxy refuses
// connections (Refuse(true)), Partition opens the listener again: clients
// connect and hang. It is safe for concurrent use.
func (p *Proxy) Partition() {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	p.mu.Lock()
	if !p.partitioned {
		p.partitioned = true
		p.healed = make(chan struct{})
	}
	p.mu.Unlock()
	p.syncListener()
}

// Heal ends a partition: held bytes are delivered, closes that happened during
// the partition are propagated and connections accepted during the partition
// dial their upstream side. If the proxy refuses connections (Refuse(true)),
// every connection is instead reset, as ResetConnections does, without
// delivering anything held, and the listener is closed. Heal without a
// partition does nothing. It is safe for concurrent use.
func (p *Proxy) Heal() {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	p.mu.Lock()
	if !p.partitioned {
		p.mu.Unlock()
		return
	}
	crash := p.refusing && !p.closed
	p.mu.Unlock()
	if crash {
		// Still partitioned here, so nothing flows before the reset.
		p.closeListener()
		p.resetAll()
	}
	p.mu.Lock()
	p.partitioned = false
	close(p.healed)
	p.mu.Unlock()
	p.syncListener()
}

// Partitioned reports whether the proxy is partitioned. It is safe for
// concurrent use.
func (p *Proxy) Partitioned() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.partitioned
}

// SetLatency delays every chunk of bytes, in each direction, so that it is
// delivered no earlier than d after the proxy read it. Order is preserved.
// Zero (or a negative d) removes the delay. On existing connections the new
// value applies from the next chunk read on. It is safe for concurrent use.
func (p *Proxy) SetLatency(d time.Duration) {
	if d < 0 {
		d = 0
	}
	p.latency.Store(int64(d))
}

// Latency returns the delay SetLatency set (0 for none). It is safe for
// concurrent use.
func (p *Proxy) Latency() time.Duration { return p.currentLatency() }

// Refuse emulates a crashed server. With refuse true, unless the proxy is
// partitioned, every open connection is reset (as ResetConnections does) and
// the listener is closed, so that new connections are refused
// (ECONNREFUSED). With refuse false the proxy listens again on Addr; if the
// address cannot be bound again after brief retries, Err reports why.
//
// A partition wins over refusing: while partitioned the listener stays open
// and connections hang whatever Refuse says; Heal then applies the crash. It is
// safe for concurrent use.
func (p *Proxy) Refuse(refuse bool) {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	p.mu.Lock()
	p.refusing = refuse
	crash := refuse && !p.partitioned && !p.closed
	p.mu.Unlock()
	// With the listener closed first, every connection admitted so far is in
	// the set resetAll resets; later ones are reset on admission.
	p.syncListener()
	if crash {
		p.resetAll()
	}
}

// ResetConnections closes every open client connection with a TCP reset
// (SO_LINGER 0) and closes its upstream side. It acts at once, also during a
// partition. It is safe for concurrent use.
func (p *Proxy) ResetConnections() {
	p.resetAll()
}

// ActiveConnections returns the number of client connections the proxy holds
// open, including those accepted during a partition that wait for Heal. It is
// safe for concurrent use.
func (p *Proxy) ActiveConnections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Err returns the error of the last attempt to open the listener again (after
// Refuse(false), or Partition while refusing) if it failed, and nil otherwise.
// It is safe for concurrent use.
func (p *Proxy) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.listenErr
}

// Close closes the listener and every connection and waits until every
// goroutine the proxy started has returned. It returns the error Err reports.
// Close is idempotent; later calls return the same error. It is safe for
// concurrent use.
func (p *Proxy) Close() error {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	p.mu.Lock()
	if p.closed {
		err := p.listenErr
		p.mu.Unlock()
		return err
	}
	p.closed = true
	p.mu.Unlock()

	p.closeListener()
	p.cancel()
	p.mu.Lock()
	all := p.snapshot()
	p.mu.Unlock()
	for _, c := range all {
		c.teardown(false, false)
	}
	p.wg.Wait()
	if p.reserved != nil {
		p.reserved.Close()
	}
	return p.Err()
}

// snapshot returns the open connections. p.mu must be held.
func (p *Proxy) snapshot() []*conn {
	all := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		all = append(all, c)
	}
	return all
}

// resetAll resets every open connection: a TCP reset to the client, a normal
// close of the upstream side.
func (p *Proxy) resetAll() {
	p.mu.Lock()
	all := p.snapshot()
	p.mu.Unlock()
	for _, c := range all {
		c.teardown(true, false)
	}
}

// forget removes c from the open connections.
func (p *Proxy) forget(c *conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *Proxy) upstreamAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.upstream
}

func (p *Proxy) currentLatency() time.Duration {
	return time.Duration(p.latency.Load())
}

// waitGate blocks while the proxy is partitioned. It returns true when the
// proxy is not partitioned and false if done was closed first.
func (p *Proxy) waitGate(done <-chan struct{}) bool {
	for {
		select {
		case <-done:
			return false
		default:
		}
		p.mu.Lock()
		if !p.partitioned {
			p.mu.Unlock()
			return true
		}
		healed := p.healed
		p.mu.Unlock()
		select {
		case <-healed:
		case <-done:
			return false
		}
	}
}

// syncListener opens or closes the listener as the state requires: open
// unless closed, or refusing while not partitioned. p.ctl must be held.
func (p *Proxy) syncListener() {
	p.mu.Lock()
	want := !p.closed && (p.partitioned || !p.refusing)
	have := p.ln != nil
	p.mu.Unlock()
	switch {
	case want && !have:
		p.openListener()
	case !want && have:
		p.closeListener()
	}
}

// openListener listens on p.addr again, retrying the bind briefly. p.ctl must
// be held.
func (p *Proxy) openListener() {
	var err error
	for i := 0; i < relistenAttempts; i++ {
		if i > 0 {
			time.Sleep(relistenInterval)
		}
		var ln net.Listener
		ln, err = listenConfig.Listen(context.Background(), "tcp", p.addr)
		if err == nil {
			p.mu.Lock()
			p.listenErr = nil
			p.mu.Unlock()
			p.startAccepting(ln)
			return
		}
	}
	p.mu.Lock()
	p.listenErr = fmt.Errorf("faultproxy: listen again on %s: %w", p.addr, err)
	p.mu.Unlock()
}

// startAccepting installs ln as the listener and starts its accept loop.
// p.ctl must be held (or the proxy not yet shared).
func (p *Proxy) startAccepting(ln net.Listener) {
	stop := make(chan struct{})
	done := make(chan struct{})
	p.mu.Lock()
	p.ln, p.lnStop, p.lnDone = ln, stop, done
	p.wg.Add(1)
	p.mu.Unlock()
	go p.acceptLoop(ln, stop, done)
}

// closeListener closes the listener, if open, and waits for its accept loop
// to return. p.ctl must be held.
func (p *Proxy) closeListener() {
	p.mu.Lock()
	ln, stop, done := p.ln, p.lnStop, p.lnDone
	p.ln, p.lnStop, p.lnDone = nil, nil, nil
	p.mu.Unlock()
	if ln == nil {
		return
	}
	close(stop)
	_ = ln.Close()
	<-done
}

func (p *Proxy) acceptLoop(ln net.Listener, stop <-chan struct{}, done chan<- struct{}) {
	defer p.wg.Done()
	defer close(done)
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error such as too many open files: pause, as
			// net/http does, until stop.
			backoff = min(max(2*backoff, 5*time.Millisecond), maxAcceptBackoff)
			t := time.NewTimer(backoff)
			select {
			case <-stop:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		backoff = 0
		p.admit(nc)
	}
}

// admit registers an accepted connection and starts forwarding it, or
// rejects it if the proxy is closed or refusing.
func (p *Proxy) admit(nc net.Conn) {
	p.mu.Lock()
	switch {
	case p.closed:
		p.mu.Unlock()
		_ = nc.Close()
		return
	case p.refusing && !p.partitioned:
		p.mu.Unlock()
		closeConn(nc, true)
		return
	}
	ctx, cancel := context.WithCancel(p.ctx)
	c := &conn{
		p:      p,
		client: nc,
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	p.conns[c] = struct{}{}
	p.wg.Add(1)
	p.mu.Unlock()
	go c.run()
}

// conn is one forwarded connection.
type conn struct {
	p      *Proxy
	client net.Conn
	ctx    context.Context // cancelled by teardown; bounds the upstream dial
	cancel context.CancelFunc
	done   chan struct{} // closed by teardown

	mu       sync.Mutex
	upstream net.Conn // nil until dialed
	closed   bool
	ended    int // directions that ended with a clean EOF
}

// chunk is what a reader hands to a writer: bytes, or the end of the source.
type chunk struct {
	data []byte
	due  time.Time // not to be delivered before
	err  error     // the source ended: io.EOF when cleanly
}

// run dials the upstream side, once the proxy is not partitioned, and starts
// the four goroutines that forward the two directions.
func (c *conn) run() {
	defer c.p.wg.Done()
	if !c.p.waitGate(c.done) {
		return
	}
	up, err := c.dial()
	if err != nil {
		// The reset is a close the partition hides like any other.
		if c.p.waitGate(c.done) {
			c.teardown(true, false)
		}
		return
	}
	if !c.attach(up) {
		return
	}
	toUpstream := make(chan chunk, queueLen)
	toClient := make(chan chunk, queueLen)
	c.p.wg.Add(4)
	go c.read(c.client, toUpstream)
	go c.write(up, toUpstream)
	go c.read(up, toClient)
	go c.write(c.client, toClient)
}

func (c *conn) dial() (net.Conn, error) {
	ctx, cancel := context.WithTimeout(c.ctx, dialTimeout)
	defer cancel()
	var d net.Dialer
	return d.DialContext(ctx, "tcp", c.p.upstreamAddr())
}

// attach records the dialed upstream side. It closes up and returns false if
// the connection was torn down meanwhile.
func (c *conn) attach(up net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = up.Close()
		return false
	}
	c.upstream = up
	return true
}

// read reads src chunk by chunk and queues the chunks, then the end of src,
// on out. It does not start a read while the proxy is partitioned.
func (c *conn) read(src net.Conn, out chan<- chunk) {
	defer c.p.wg.Done()
	buf := make([]byte, chunkSize)
	for {
		if !c.p.waitGate(c.done) {
			return
		}
		n, err := src.Read(buf)
		due := time.Now().Add(c.p.currentLatency())
		if n > 0 {
			if !c.queue(out, chunk{data: bytes.Clone(buf[:n]), due: due}) {
				return
			}
		}
		if err != nil {
			c.queue(out, chunk{err: err, due: due})
			return
		}
	}
}

// queue hands ch to the writer. It returns false if the connection was torn
// down first.
func (c *conn) queue(out chan<- chunk, ch chunk) bool {
	select {
	case out <- ch:
		return true
	case <-c.done:
		return false
	}
}

// write delivers the chunks from in to dst, each when due and when the proxy
// is not partitioned, then propagates the end of the source: a half close
// (FIN) of dst after a clean EOF, a reset of both sides after an error.
func (c *conn) write(dst net.Conn, in <-chan chunk) {
	defer c.p.wg.Done()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var ch chunk
		select {
		case ch = <-in:
		case <-c.done:
			return
		}
		if d := time.Until(ch.due); d > 0 {
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			select {
			case <-timer.C:
			case <-c.done:
				return
			}
		}
		if !c.p.waitGate(c.done) {
			return
		}
		switch {
		case ch.err == nil:
			if _, err := dst.Write(ch.data); err != nil {
				// The write may have started before a partition; its
				// failure is a close the partition hides.
				if c.p.waitGate(c.done) {
					c.teardown(true, true)
				}
				return
			}
		case errors.Is(ch.err, io.EOF):
			if err := closeWrite(dst); err != nil {
				c.teardown(true, true)
				return
			}
			c.endDirection()
			return
		default:
			c.teardown(true, true)
			return
		}
	}
}

// endDirection records that one direction ended cleanly and closes the
// connection when both have.
func (c *conn) endDirection() {
	c.mu.Lock()
	c.ended++
	both := c.ended == 2
	c.mu.Unlock()
	if both {
		c.teardown(false, false)
	}
}

// teardown closes both sides of the connection, with a TCP reset where asked,
// once; it unblocks every goroutine of the connection.
func (c *conn) teardown(resetClient, resetUpstream bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	up := c.upstream
	c.mu.Unlock()
	// Forgotten first, so that a peer that sees the close also sees it
	// counted out of ActiveConnections.
	c.p.forget(c)
	close(c.done)
	c.cancel()
	closeConn(c.client, resetClient)
	if up != nil {
		closeConn(up, resetUpstream)
	}
}

// closeConn closes nc, with a TCP reset (SO_LINGER 0) if reset is true.
func closeConn(nc net.Conn, reset bool) {
	if reset {
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	_ = nc.Close()
}

// closeWrite half-closes nc: the peer reads EOF, nc can still be read.
func closeWrite(nc net.Conn) error {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nc.Close()
}
