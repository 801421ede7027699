package discovery_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
)

// fakeDNSResolver returns a resolver whose every query for an A record
// is answered, over a stream, with n A records (127.0.x.y): a DNS server
// that floods. AAAA queries get none.
func fakeDNSResolver(n int) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		client, server := net.Pipe()
		go serveDNSStream(server, func(q []byte) []byte {
			// The question ends with its type and class.
			qEnd := 12
			for qEnd < len(q) && q[qEnd] != 0 {
				qEnd += int(q[qEnd]) + 1
			}
			qEnd += 5
			if qEnd > len(q) {
				return nil
			}
			qtype := binary.BigEndian.Uint16(q[qEnd-4:])
			count := n
			if qtype != 1 {
				count = 0
			}
			resp := append([]byte{}, q[:qEnd]...)
			resp[2] |= 0x84 // response, authoritative
			resp[3] = 0x80  // recursion available, no error
			binary.BigEndian.PutUint16(resp[6:], uint16(count))
			binary.BigEndian.PutUint16(resp[8:], 0)
			binary.BigEndian.PutUint16(resp[10:], 0)
			for i := range count {
				resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, byte(i>>8), byte(i))
			}
			return resp
		})
		return client, nil
	}}
}

// serveDNSStream answers the DNS queries that come over the stream c (each
// after its length, as over TCP) with answer's replies until c ends or
// answer gives none, then closes c.
func serveDNSStream(c net.Conn, answer func(q []byte) []byte) {
	defer c.Close()
	for {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		out := answer(q)
		if out == nil {
			return
		}
		binary.BigEndian.PutUint16(l[:], uint16(len(out)))
		if _, err := c.Write(append(l[:], out...)); err != nil {
			return
		}
	}
}

// TestDNSMaxNodes: an answer of 4,000 A records is refused whole, not made
// 4,000 nodes; MaxNodes raises the bound.
func TestDNSMaxNodes(t *testing.T) {
	d, err := discovery.NewDNS(discovery.DNSConfig{Name: "db.example.com", Port: 5432, Interval: time.Hour, MinInterval: time.Millisecond,
		Resolver: fakeDNSResolver(4000)})
	require.NoError(t, err)
	st := watch(t, d).waitFor("the first look", func(discovery.State) bool { return true })
	require.ErrorIs(t, st.Err, discovery.ErrTooManyNodes)
	assert.ErrorContains(t, st.Err, "4000 nodes, over the limit of 64")
	assert.ErrorContains(t, st.Err, discovery.SettingMaxNodes)
	assert.Empty(t, st.Nodes)

	d, err = discovery.NewDNS(discovery.DNSConfig{Name: "db.example.com", Port: 5432, Interval: time.Hour, MaxNodes: 100,
		Resolver: fakeDNSResolver(100)})
	require.NoError(t, err)
	st = watch(t, d).waitFor("the first look", func(discovery.State) bool { return true })
	require.NoError(t, st.Err)
	assert.Len(t, st.Nodes, 100)

	_, err = discovery.FromSettings(map[string]string{discovery.SettingDiscovery: "dns", discovery.SettingMaxNodes: "0"}, []string{"db:5432"})
	assert.ErrorContains(t, err, discovery.SettingMaxNodes)
	_, err = discovery.NewDNS(discovery.DNSConfig{Name: "db", Port: 1, MaxNodes: -1})
	assert.ErrorContains(t, err, "MaxNodes -1")
}

// patroniMembers is a /cluster answer of n members, each with its own
// address and the API api(i).
func patroniMembers(n int, api func(i int) string) string {
	var b strings.Builder
	b.WriteString(`{"members": [`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"name": "m%d", "role": "replica", "host": "10.%d.%d.%d", "port": 5432, "api_url": %q}`,
			i, i>>16&255, i>>8&255, i&255, api(i))
	}
	b.WriteString(`]}`)
	return b.String()
}

// TestPatroniMaxNodes: answers of 10,000 and 60,000 members are refused
// whole; the last good set stays.
func TestPatroniMaxNodes(t *testing.T) {
	f := newFakePatroni(t, patroni4Cluster)
	p := newPatroni(t, f.URL)
	w := watch(t, p)
	good := w.waitFor("a good set", func(s discovery.State) bool { return s.Err == nil })
	f.set(http.StatusOK, patroniMembers(65, func(int) string { return "" }))
	p.Refresh()
	st := w.waitFor("an error", func(s discovery.State) bool { return s.Err != nil })
	assert.ErrorIs(t, st.Err, discovery.ErrTooManyNodes)
	assert.ErrorContains(t, st.Err, "65 members, over the limit of 64")
	for _, n := range []int{10000, 60000} {
		f.set(http.StatusOK, patroniMembers(n, func(int) string { return "" }))
		p.Refresh()
		// 60,000 members also pass the 4 MiB bound of a response: either
		// refusal will do.
		st := w.waitFor("an error", func(s discovery.State) bool {
			return s.Err != nil && (strings.Contains(s.Err.Error(), fmt.Sprintf(": %d members", n)) ||
				n > 10000 && strings.Contains(s.Err.Error(), "response over"))
		})
		assert.Equal(t, good.Nodes, st.Nodes)
	}
}

// TestPatroniLookBounded: when the configured API fails, a look asks a few
// of the members' APIs, not each of them in turn: 20 members whose APIs
// hang get at most 3 requests in one look.
func TestPatroniLookBounded(t *testing.T) {
	var hung atomic.Int64
	var apis []string
	for range 20 {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hung.Add(1)
			<-r.Context().Done()
		}))
		t.Cleanup(srv.Close)
		apis = append(apis, srv.URL)
	}
	f := newFakePatroni(t, patroniMembers(20, func(i int) string { return apis[i] }))
	p, err := discovery.NewPatroni(discovery.PatroniConfig{URLs: []string{f.URL}, Interval: time.Hour, MinInterval: time.Millisecond,
		Timeout: 50 * time.Millisecond})
	require.NoError(t, err)
	assert.Equal(t, discovery.DefaultPatroniLookTimeout, p.Config().LookTimeout)
	w := watch(t, p)
	w.waitFor("a good set", func(s discovery.State) bool { return s.Err == nil })
	f.set(http.StatusServiceUnavailable, "")
	p.Refresh()
	st := w.waitFor("an error", func(s discovery.State) bool { return s.Err != nil })
	assert.LessOrEqual(t, hung.Load(), int64(3), "members' APIs asked in one look: %v", st.Err)
	assert.Positive(t, hung.Load(), "a member's API is a fallback")

	_, err = discovery.NewPatroni(discovery.PatroniConfig{URLs: []string{f.URL}, Timeout: time.Second, LookTimeout: time.Millisecond})
	assert.ErrorContains(t, err, "LookTimeout")
}

// TestPatroniConfiguredFirst: after the configured API failed one look and
// a member's advertised API answered, the next look asks the configured
// API first again: a member's API is a fallback, never promoted above it.
func TestPatroniConfiguredFirst(t *testing.T) {
	member := newFakePatroni(t, `{"members": [{"name": "rogue", "role": "leader", "host": "10.6.6.6", "port": 5432}]}`)
	configured := newFakePatroni(t, `{"members": [
		{"name": "c", "role": "leader", "host": "10.9.0.1", "port": 5432, "api_url": "`+member.URL+`"}]}`)
	p := newPatroni(t, configured.URL)
	w := watch(t, p)
	w.waitFor("the configured set", addrsAre("10.9.0.1:5432"))

	configured.set(http.StatusServiceUnavailable, "")
	p.Refresh()
	w.waitFor("the member's set", addrsAre("10.6.6.6:5432"))

	configured.set(http.StatusOK, `{"members": [{"name": "c", "role": "leader", "host": "10.9.0.1", "port": 5432}]}`)
	before := member.requests.Load()
	p.Refresh()
	w.waitFor("the configured set again", addrsAre("10.9.0.1:5432"))
	assert.Equal(t, before, member.requests.Load(), "the member's API is not asked while the configured one answers")
}

// TestPatroniHTTPSNoDowngrade: with https configured URLs only, a member's
// advertised http API is never asked.
func TestPatroniHTTPSNoDowngrade(t *testing.T) {
	plain := newFakePatroni(t, `{"members": [{"name": "rogue", "role": "leader", "host": "10.6.6.6", "port": 5432}]}`)
	var body atomic.Pointer[string]
	good := `{"members": [{"name": "c", "role": "leader", "host": "10.9.0.1", "port": 5432, "api_url": "` + plain.URL + `"}]}`
	body.Store(&good)
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := *body.Load()
		if b == "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, b)
	}))
	t.Cleanup(secure.Close)
	p, err := discovery.NewPatroni(discovery.PatroniConfig{URLs: []string{secure.URL}, Interval: time.Hour, MinInterval: time.Millisecond, Client: secure.Client()})
	require.NoError(t, err)
	w := watch(t, p)
	w.waitFor("the set", addrsAre("10.9.0.1:5432"))
	empty := ""
	body.Store(&empty)
	p.Refresh()
	st := w.waitFor("an error", func(s discovery.State) bool { return s.Err != nil })
	assert.Zero(t, plain.requests.Load(), "the http API was asked: %v", st.Err)
	assert.False(t, errors.Is(st.Err, discovery.ErrTooManyNodes))
}

// TestPatroniMemberFlood: an answer under the 4 MiB bound made of about
// 1.4 million empty members is refused without decoding them: one look
// allocates a few times the answer's size, not tens of times.
func TestPatroniMemberFlood(t *testing.T) {
	f := newFakePatroni(t, patroni4Cluster)
	p := newPatroni(t, f.URL)
	w := watch(t, p)
	w.waitFor("a good set", func(s discovery.State) bool { return s.Err == nil })

	var b strings.Builder
	b.WriteString(`{"members":[`)
	for b.Len() < 4<<20-16 {
		b.WriteString(`{},`)
	}
	b.WriteString(`{}]}`)
	f.set(http.StatusOK, b.String())
	n := len(w.all())
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	p.Refresh()
	st := w.waitFor("an error", func(s discovery.State) bool { return len(w.all()) > n && s.Err != nil })
	runtime.ReadMemStats(&after)
	require.ErrorIs(t, st.Err, discovery.ErrTooManyNodes)
	assert.ErrorContains(t, st.Err, "members, over the limit of 64")
	total := after.TotalAlloc - before.TotalAlloc
	t.Logf("a %d-byte answer: %d MiB allocated by the look", b.Len(), total>>20)
	assert.Less(t, total, uint64(64<<20), "one look of a %d-byte answer allocated %d MiB", b.Len(), total>>20)
}

// TestPatroniTagFlood: a member with more than 64 tags is refused, with
// the answer it came in; 64 are taken.
func TestPatroniTagFlood(t *testing.T) {
	answer := func(tags int) string {
		var b strings.Builder
		b.WriteString(`{"members":[{"name":"n1","role":"leader","host":"10.0.0.1","port":5432,"tags":{`)
		for i := range tags {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `"t%d":%d`, i, i)
		}
		b.WriteString(`}}]}`)
		return b.String()
	}
	f := newFakePatroni(t, answer(64))
	p := newPatroni(t, f.URL)
	w := watch(t, p)
	st := w.waitFor("a good set", func(s discovery.State) bool { return s.Err == nil })
	require.Len(t, st.Nodes, 1)
	assert.Len(t, st.Nodes[0].Tags, 64)
	assert.Equal(t, "63", st.Nodes[0].Tags["t63"])
	f.set(http.StatusOK, answer(100000))
	n := len(w.all())
	p.Refresh()
	st = w.waitFor("an error", func(s discovery.State) bool { return len(w.all()) > n && s.Err != nil })
	assert.ErrorContains(t, st.Err, `member "n1": more than 64 tags`)
}
