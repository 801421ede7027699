package discovery

import (
	"context"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// silentDNS returns the address of a UDP server that takes queries and
// answers none; it stops with the test.
func silentDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

// A query whose own deadline passes times out as Go's resolver expects (a
// timeout, DNSError.IsTimeout), not as a socket closed under it; one whose
// context is cancelled ends at once.
func TestCancellableQueryEnds(t *testing.T) {
	addr := silentDNS(t)
	r := cancellable(&net.Resolver{PreferGo: true})
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			return ctx, cancel
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			c, err := r.Dial(ctx, "udp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("query")); err != nil {
				t.Fatal(err)
			}
			// No deadline of its own: only the context's end can stop
			// this read (the test's timeout otherwise).
			_, err = c.Read(make([]byte, 512))
			var ne net.Error
			if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("read ended with %v, want a timeout", err)
			}
		})
	}
}

// A Discoverer follows its Resolver's fields as they are when it looks,
// as Go's resolver does: a Dial set after NewDNS is the one that dials.
func TestResolverChangedAfterNew(t *testing.T) {
	addr := silentDNS(t)
	r := &net.Resolver{PreferGo: true}
	d, err := NewDNS(DNSConfig{Name: "db.silent.test", Port: 5432, Resolver: r})
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r.Dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
		dials.Add(1)
		cancel() // the server never answers: the look ends once it asked
		var nd net.Dialer
		return nd.DialContext(ctx, "udp", addr)
	}
	if _, err := d.look(ctx); err == nil {
		t.Fatal("a look at a server that never answers succeeded")
	}
	if dials.Load() == 0 {
		t.Fatal("the Dial set after NewDNS was not used")
	}
	if d.Config().Resolver != r {
		t.Fatal("Config().Resolver is not the Resolver configured")
	}
}
