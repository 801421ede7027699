//go:build linux

package discovery_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/testcluster/dnsmasq"
)

// setCtx bounds one change of the DNS server's records.
func setCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	t.Cleanup(cancel)
	return ctx
}

func TestDNS(t *testing.T) {
	srv := dnsmasq.New(t, dnsmasq.Options{})
	ctx := setCtx(t)
	name := srv.Name("db")
	require.NoError(t, srv.SetHost(ctx, name, "127.0.0.12", "127.0.0.11", "::1"))

	d, err := discovery.NewDNS(discovery.DNSConfig{
		Name:        name,
		Port:        5432,
		Interval:    time.Hour, // looks come from Refresh alone
		MinInterval: time.Millisecond,
		Timeout:     time.Second, // for the look at a hung server
		Resolver:    srv.Resolver(),
	})
	require.NoError(t, err)
	w := watch(t, d)

	st := w.waitFor("the first set", func(discovery.State) bool { return true })
	require.NoError(t, st.Err)
	assert.Equal(t, []string{"127.0.0.11:5432", "127.0.0.12:5432", "[::1]:5432"}, addrs(st.Nodes), "every A and AAAA address, IPv4 first, in order")
	for _, n := range st.Nodes {
		assert.Empty(t, n.Name)
		assert.Nil(t, n.Tags)
	}

	t.Run("an address added", func(t *testing.T) {
		require.NoError(t, srv.SetHost(ctx, name, "127.0.0.11", "127.0.0.12", "127.0.0.13", "::1"))
		d.Refresh()
		w.waitFor("the new address", addrsAre("127.0.0.11:5432", "127.0.0.12:5432", "127.0.0.13:5432", "[::1]:5432"))
	})
	t.Run("addresses removed", func(t *testing.T) {
		require.NoError(t, srv.SetHost(ctx, name, "127.0.0.13"))
		d.Refresh()
		w.waitFor("one address left", addrsAre("127.0.0.13:5432"))
	})
	t.Run("the name removed: an error, the last good set stays", func(t *testing.T) {
		require.NoError(t, srv.SetHost(ctx, name))
		d.Refresh()
		st := w.waitFor("an error", func(s discovery.State) bool { return s.Err != nil })
		assert.ErrorIs(t, st.Err, discovery.ErrNoNodes)
		var dnsErr *net.DNSError
		assert.ErrorAs(t, st.Err, &dnsErr, "the resolver's error is wrapped")
		assert.ErrorContains(t, st.Err, "discovery: dns "+name+": ")
		assert.Equal(t, []string{"127.0.0.13:5432"}, addrs(st.Nodes))
	})
	t.Run("back", func(t *testing.T) {
		require.NoError(t, srv.SetHost(ctx, name, "127.0.0.14"))
		d.Refresh()
		w.waitFor("the set again, without error", addrsAre("127.0.0.14:5432"))
	})
	t.Run("the server hangs: an error, the last good set stays", func(t *testing.T) {
		require.NoError(t, srv.Pause())
		d.Refresh()
		st := w.waitFor("an error", func(s discovery.State) bool { return s.Err != nil })
		assert.NotErrorIs(t, st.Err, discovery.ErrNoNodes)
		assert.Equal(t, []string{"127.0.0.14:5432"}, addrs(st.Nodes))
		require.NoError(t, srv.Resume())
		d.Refresh()
		w.waitFor("recovery", addrsAre("127.0.0.14:5432"))
	})
}

// TestDNSInterval checks that a DNS Discoverer looks again on its own, and
// that it reports a State only when it changes.
func TestDNSInterval(t *testing.T) {
	srv := dnsmasq.New(t, dnsmasq.Options{})
	ctx := setCtx(t)
	name := srv.Name("db")
	require.NoError(t, srv.SetHost(ctx, name, "10.1.0.1"))

	// Count the queries: each look sends at least one.
	var queries atomic.Int64
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		queries.Add(1)
		var dialer net.Dialer
		return dialer.DialContext(ctx, network, srv.Addr())
	}}
	d, err := discovery.NewDNS(discovery.DNSConfig{Name: name + ".", Port: 6432, Interval: 20 * time.Millisecond, Resolver: resolver})
	require.NoError(t, err)
	w := watch(t, d)
	w.waitFor("the first set", addrsAre("10.1.0.1:6432"))

	// Many looks with the same answer: still one State.
	seen := queries.Load()
	require.Eventually(t, func() bool { return queries.Load() >= seen+20 }, waitBound, 5*time.Millisecond, "looks on the interval")
	assert.Len(t, w.all(), 1, "an unchanged set is not reported again: %s", describe(w.all()))

	require.NoError(t, srv.SetHost(ctx, name, "10.1.0.1", "10.1.0.2"))
	w.waitFor("the change, found on the interval", addrsAre("10.1.0.1:6432", "10.1.0.2:6432"))
	assert.Len(t, w.all(), 2, "one State per change: %s", describe(w.all()))
}

// TestDNSFirstLookFails checks a Discoverer whose name does not resolve yet:
// it reports the error with no nodes, retries with backoff, and reports the
// set once the name appears.
func TestDNSFirstLookFails(t *testing.T) {
	srv := dnsmasq.New(t, dnsmasq.Options{})
	ctx := setCtx(t)
	name := srv.Name("later")
	d, err := discovery.NewDNS(discovery.DNSConfig{Name: name, Port: 5432, Interval: time.Hour, MinInterval: 10 * time.Millisecond, Resolver: srv.Resolver()})
	require.NoError(t, err)
	w := watch(t, d)
	st := w.waitFor("an error", func(s discovery.State) bool { return s.Err != nil })
	assert.Nil(t, st.Nodes, "no set yet")
	assert.ErrorIs(t, st.Err, discovery.ErrNoNodes)

	require.NoError(t, srv.SetHost(ctx, name, "10.2.0.1"))
	// No Refresh, and the interval is an hour: the retry after a failure
	// finds it.
	w.waitFor("the set", addrsAre("10.2.0.1:5432"))
}

func TestSRV(t *testing.T) {
	srv := dnsmasq.New(t, dnsmasq.Options{})
	ctx := setCtx(t)
	for host, addrs := range map[string][]string{
		"pg-0": {"127.0.1.1"},
		"pg-1": {"127.0.1.2", "::2"},
		"pg-2": {"127.0.1.3"},
	} {
		require.NoError(t, srv.SetHost(ctx, srv.Name(host), addrs...))
	}
	record := "_postgresql._tcp." + srv.Name("db")
	require.NoError(t, srv.SetSRV(ctx, record,
		dnsmasq.SRV{Target: srv.Name("pg-1"), Port: 6001, Priority: 0, Weight: 10},
		dnsmasq.SRV{Target: srv.Name("pg-0"), Port: 6000, Priority: 0, Weight: 20},
		dnsmasq.SRV{Target: srv.Name("pg-2"), Port: 6002, Priority: 1, Weight: 5},
		dnsmasq.SRV{Target: srv.Name("gone"), Port: 6003, Priority: 0, Weight: 5}, // no address record
	))

	// The name without its _postgresql._tcp. prefix means that record.
	d, err := discovery.NewSRV(discovery.SRVConfig{Name: srv.Name("db"), Interval: time.Hour, MinInterval: time.Millisecond, Resolver: srv.Resolver()})
	require.NoError(t, err)
	assert.Equal(t, "srv "+record, d.String())
	w := watch(t, d)
	st := w.waitFor("the first set", func(discovery.State) bool { return true })
	require.NoError(t, st.Err)
	// Priority first, weight (highest first) next; a target that does not
	// resolve is left out.
	assert.Equal(t, []string{"127.0.1.1:6000", "127.0.1.2:6001", "[::2]:6001", "127.0.1.3:6002"}, addrs(st.Nodes))
	assert.Equal(t, discovery.Node{Addr: "127.0.1.1:6000", Name: srv.Name("pg-0"),
		Tags: map[string]string{"srv_priority": "0", "srv_weight": "20"}}, st.Nodes[0])
	assert.Equal(t, srv.Name("pg-2"), st.Nodes[3].Name)
	assert.Equal(t, map[string]string{"srv_priority": "1", "srv_weight": "5"}, st.Nodes[3].Tags)

	t.Run("a target's address changes", func(t *testing.T) {
		require.NoError(t, srv.SetHost(ctx, srv.Name("pg-2"), "127.0.1.30"))
		d.Refresh()
		w.waitFor("the new address", addrsAre("127.0.1.1:6000", "127.0.1.2:6001", "[::2]:6001", "127.0.1.30:6002"))
	})
	t.Run("records added and removed", func(t *testing.T) {
		require.NoError(t, srv.SetHost(ctx, srv.Name("pg-3"), "127.0.1.4"))
		require.NoError(t, srv.SetSRV(ctx, record,
			dnsmasq.SRV{Target: srv.Name("pg-0"), Port: 6000, Weight: 20},
			dnsmasq.SRV{Target: srv.Name("pg-3"), Port: 6004, Weight: 20},
		))
		d.Refresh()
		w.waitFor("the new records", addrsAre("127.0.1.1:6000", "127.0.1.4:6004"))
	})
	t.Run("the record removed: an error, the last good set stays", func(t *testing.T) {
		require.NoError(t, srv.SetSRV(ctx, record))
		d.Refresh()
		st := w.waitFor("an error", func(s discovery.State) bool { return s.Err != nil })
		assert.ErrorIs(t, st.Err, discovery.ErrNoNodes)
		assert.Equal(t, []string{"127.0.1.1:6000", "127.0.1.4:6004"}, addrs(st.Nodes))
	})
	t.Run("no target resolves: an error, the last good set stays", func(t *testing.T) {
		require.NoError(t, srv.SetSRV(ctx, record, dnsmasq.SRV{Target: srv.Name("gone"), Port: 6003}))
		d.Refresh()
		st := w.waitFor("the error of an empty set", func(s discovery.State) bool {
			return s.Err != nil && errors.Is(s.Err, discovery.ErrNoNodes) && !errors.As(s.Err, new(*net.DNSError))
		})
		assert.Equal(t, []string{"127.0.1.1:6000", "127.0.1.4:6004"}, addrs(st.Nodes))
	})
}

func TestNewDNSErrors(t *testing.T) {
	for _, tt := range []struct {
		cfg  discovery.DNSConfig
		want string
	}{
		{discovery.DNSConfig{Port: 5432}, `discovery: dns: name "": want a DNS name`},
		{discovery.DNSConfig{Name: "a..b", Port: 5432}, `discovery: dns: name "a..b"`},
		{discovery.DNSConfig{Name: "db.example.com"}, "discovery: dns: no port"},
		{discovery.DNSConfig{Name: "db.example.com", Port: 1, Interval: -time.Second}, "discovery: dns: Interval -1s: must not be negative"},
		{discovery.DNSConfig{Name: "db.example.com", Port: 1, Timeout: -1}, "discovery: dns: Timeout -1ns: must not be negative"},
	} {
		_, err := discovery.NewDNS(tt.cfg)
		assert.ErrorContains(t, err, tt.want)
	}
	_, err := discovery.NewSRV(discovery.SRVConfig{Name: "bad name"})
	assert.ErrorContains(t, err, `discovery: srv: name "bad name"`)
	_, err = discovery.NewSRV(discovery.SRVConfig{Name: "db.example.com", MinInterval: -1})
	assert.ErrorContains(t, err, "discovery: srv: MinInterval -1ns: must not be negative")

	d, err := discovery.NewDNS(discovery.DNSConfig{Name: "db.example.com", Port: 1, Interval: 100 * time.Millisecond})
	require.NoError(t, err)
	assert.Equal(t, 100*time.Millisecond, d.Config().MinInterval, "MinInterval is at most Interval")
}

// TestLookupEndsWithRun checks that a look in flight ends with Run: a DNS
// server that takes queries and never answers holds Go's resolver reading
// its socket for the resolver's timeout (5 s a try), which would outlive the
// Discoverer and the Manager that owns it.
func TestLookupEndsWithRun(t *testing.T) {
	for _, kind := range []string{"dns", "srv"} {
		t.Run(kind, func(t *testing.T) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			require.NoError(t, err)
			defer pc.Close()
			queried := make(chan struct{})
			go func() { // takes queries, answers none; ends with pc
				var once sync.Once
				buf := make([]byte, 512)
				for {
					if _, _, err := pc.ReadFrom(buf); err != nil {
						return
					}
					once.Do(func() { close(queried) })
				}
			}()
			resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "udp", pc.LocalAddr().String())
			}}
			var d discovery.Discoverer
			if kind == "dns" {
				d, err = discovery.NewDNS(discovery.DNSConfig{Name: "db.silent.test", Port: 5432, Timeout: time.Hour, Resolver: resolver})
			} else {
				d, err = discovery.NewSRV(discovery.SRVConfig{Name: "db.silent.test", Timeout: time.Hour, Resolver: resolver})
			}
			require.NoError(t, err)
			before := goleak.IgnoreCurrent()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx, func(discovery.State) {}) }()
			select {
			case <-queried:
			case <-time.After(waitBound):
				t.Fatal("no query reached the server")
			}
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(waitBound):
				t.Fatal("Run did not return when its context ended")
			}
			goleak.VerifyNone(t, before)
		})
	}
}
