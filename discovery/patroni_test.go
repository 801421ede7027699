package discovery_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
)

// Patroni's REST API is not PostgreSQL: these tests serve what it answers
// (as Patroni 3.0 and 4.0 write it) to check the parsing and the choice of
// API in cases a live cluster cannot stage at will. patroni_live_test.go
// runs against real Patroni.

// patroni3Cluster is GET /cluster of Patroni 3.0.2, with every kind of tag
// value and a member whose lag is unknown.
const patroni3Cluster = `{"members": [
 {"name": "n2", "role": "sync_standby", "state": "streaming", "api_url": "http://127.0.0.1:8009/patroni",
  "host": "10.0.0.2", "port": 5433, "timeline": 3, "lag": 1024,
  "tags": {"noloadbalance": true, "zone": "b", "failover_priority": 2, "replicatefrom": "n1", "extra": {"a": [1, 2]}, "none": null}},
 {"name": "n1", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:8008/patroni",
  "host": "10.0.0.1", "port": 5432, "timeline": 3},
 {"name": "n3", "role": "replica", "state": "stopped", "api_url": "http://127.0.0.1:8010/patroni",
  "host": "fd00::3", "timeline": 2, "lag": "unknown", "tags": {"nofailover": true}},
 {"name": "n4", "role": "replica", "state": "starting", "api_url": "http://127.0.0.1:8011/patroni"}
], "scope": "demo"}`

// patroni4Cluster is GET /cluster of Patroni 4, which adds lag fields and
// quorum standbys.
const patroni4Cluster = `{"members": [
 {"name": "a", "role": "leader", "state": "running", "api_url": "https://a:8008/patroni", "host": "a.db", "port": 5432, "timeline": 1, "lsn": "0/4000000"},
 {"name": "b", "role": "quorum_standby", "state": "streaming", "api_url": "https://b:8008/patroni", "host": "b.db", "port": 5432,
  "timeline": 1, "receive_lag": 0, "receive_lsn": "0/4000000", "replay_lag": 16, "replay_lsn": "0/3FFFFF0", "lag": 16}
], "scope": "demo"}`

// fakePatroni serves body (or status alone when it is not 200) on
// /cluster, and counts requests.
type fakePatroni struct {
	*httptest.Server
	status   atomic.Int64
	body     atomic.Pointer[string]
	requests atomic.Int64
}

func newFakePatroni(t *testing.T, body string) *fakePatroni {
	f := &fakePatroni{}
	f.status.Store(http.StatusOK)
	f.body.Store(&body)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		if r.URL.Path != "/cluster" || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		if s := int(f.status.Load()); s != http.StatusOK {
			w.WriteHeader(s)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, *f.body.Load())
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakePatroni) set(status int, body string) {
	f.body.Store(&body)
	f.status.Store(int64(status))
}

// closedURL returns the URL of a port nothing listens on.
func closedURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return "http://" + addr
}

func newPatroni(t *testing.T, urls ...string) *discovery.Patroni {
	t.Helper()
	p, err := discovery.NewPatroni(discovery.PatroniConfig{URLs: urls, Interval: time.Hour, MinInterval: time.Millisecond, Timeout: 5 * time.Second})
	require.NoError(t, err)
	return p
}

func TestPatroniParse(t *testing.T) {
	f := newFakePatroni(t, patroni3Cluster)
	w := watch(t, newPatroni(t, f.URL+"/patroni"))
	st := w.waitFor("the set", func(discovery.State) bool { return true })
	require.NoError(t, st.Err)
	// By member name; n4 has no host and is left out.
	assert.Equal(t, []discovery.Node{
		{Addr: "10.0.0.1:5432", Name: "n1", Role: "leader", State: "running"},
		{Addr: "10.0.0.2:5433", Name: "n2", Role: "sync_standby", State: "streaming", Lag: discovery.Lag{Bytes: 1024, Known: true},
			Tags: map[string]string{"noloadbalance": "true", "zone": "b", "failover_priority": "2", "replicatefrom": "n1",
				"extra": `{"a":[1,2]}`, "none": ""}},
		{Addr: "[fd00::3]:5432", Name: "n3", Role: "replica", State: "stopped", Tags: map[string]string{"nofailover": "true"}},
	}, st.Nodes)
	assert.True(t, st.Nodes[1].Tag(discovery.TagNoLoadBalance))
	assert.True(t, st.Nodes[2].Tag(discovery.TagNoFailover))
	assert.False(t, st.Nodes[0].Tag(discovery.TagNoLoadBalance))
}

func TestPatroniParse4(t *testing.T) {
	f := newFakePatroni(t, patroni4Cluster)
	w := watch(t, newPatroni(t, f.URL))
	st := w.waitFor("the set", func(discovery.State) bool { return true })
	require.NoError(t, st.Err)
	assert.Equal(t, []discovery.Node{
		{Addr: "a.db:5432", Name: "a", Role: "leader", State: "running"},
		{Addr: "b.db:5432", Name: "b", Role: "quorum_standby", State: "streaming", Lag: discovery.Lag{Bytes: 16, Known: true}},
	}, st.Nodes)
}

func TestPatroniBadAnswers(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"server error", http.StatusServiceUnavailable, "", "GET /cluster: 503 Service Unavailable"},
		{"not JSON", http.StatusOK, "<html>", "GET /cluster: not a Patroni cluster"},
		{"no member", http.StatusOK, `{"members": []}`, "no node found"},
		{"no member with a host", http.StatusOK, `{"members": [{"name": "x", "role": "replica"}]}`, "no node found"},
		{"only a member with a bad port", http.StatusOK, `{"members": [{"name": "x", "host": "h", "port": 70000}]}`, "no node found"},
		{"socket path as host", http.StatusOK, `{"members": [{"name": "x", "host": "/tmp/pg", "port": 5432}]}`, `member "x": host "/tmp/pg" is a path`},
		{"too big", http.StatusOK, `{"members": [], "pad": "` + strings.Repeat("x", 5<<20) + `"}`, "response over 4194304 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakePatroni(t, patroni3Cluster)
			p := newPatroni(t, f.URL)
			w := watch(t, p)
			good := w.waitFor("a good set", func(s discovery.State) bool { return s.Err == nil })
			f.set(tt.status, tt.body)
			p.Refresh()
			st := w.waitFor("an error", func(s discovery.State) bool { return s.Err != nil })
			assert.ErrorContains(t, st.Err, tt.want)
			assert.ErrorContains(t, st.Err, "discovery: patroni: no member's REST API answered: "+f.URL+": ")
			assert.Equal(t, good.Nodes, st.Nodes, "the last good set stays")
		})
	}
}

// TestPatroniFailsOver checks the order in which a look asks the APIs: the
// one that answered last, the configured ones, then those of the members.
func TestPatroniFailsOver(t *testing.T) {
	member := newFakePatroni(t, `{"members": [{"name": "m", "role": "leader", "host": "10.9.0.9", "port": 5432}]}`)
	// The configured API lists a member whose API is member's.
	configured := newFakePatroni(t, `{"members": [
		{"name": "c", "role": "leader", "host": "10.9.0.1", "port": 5432, "api_url": "`+member.URL+`/patroni"},
		{"name": "m", "role": "replica", "host": "10.9.0.9", "port": 5432, "api_url": "`+member.URL+`/patroni"}]}`)
	failing := newFakePatroni(t, "")
	failing.set(http.StatusServiceUnavailable, "")
	down := closedURL(t)
	p := newPatroni(t, down, failing.URL, configured.URL)
	w := watch(t, p)
	w.waitFor("the set, from the third URL", addrsAre("10.9.0.1:5432", "10.9.0.9:5432"))
	require.EqualValues(t, 1, failing.requests.Load())

	// The one that answered is asked first: the others are not asked again.
	before := configured.requests.Load()
	p.Refresh()
	require.Eventually(t, func() bool { return configured.requests.Load() > before }, waitBound, time.Millisecond)
	assert.EqualValues(t, 1, failing.requests.Load(), "an API that failed is not asked while the last one answers")

	// Both configured APIs fail: the member's API, learned from the last
	// set, answers.
	configured.set(http.StatusInternalServerError, "")
	p.Refresh()
	st := w.waitFor("the set from the member's API", addrsAre("10.9.0.9:5432"))
	assert.Equal(t, "leader", st.Nodes[0].Role)
	assert.Positive(t, member.requests.Load())

	// Nothing answers: one error naming every API, the last set stays.
	member.set(http.StatusBadGateway, "")
	p.Refresh()
	st = w.waitFor("an error", func(s discovery.State) bool { return s.Err != nil })
	for _, u := range []string{down, failing.URL, configured.URL, member.URL} {
		assert.ErrorContains(t, st.Err, u+": ", "each API's error is in the error")
	}
	assert.Equal(t, []string{"10.9.0.9:5432"}, addrs(st.Nodes))
}

func TestPatroniPasswordNotShown(t *testing.T) {
	f := newFakePatroni(t, patroni3Cluster)
	f.set(http.StatusUnauthorized, "")
	withPassword := strings.Replace(f.URL, "http://", "http://admin:hunter2@", 1)
	p := newPatroni(t, withPassword, strings.Replace(closedURL(t), "http://", "http://admin:hunter2@", 1))
	assert.NotContains(t, p.String(), "hunter2")
	w := watch(t, p)
	st := w.waitFor("an error", func(s discovery.State) bool { return s.Err != nil })
	assert.ErrorContains(t, st.Err, "401 Unauthorized")
	assert.NotContains(t, st.Err.Error(), "hunter2")
	assert.Contains(t, st.Err.Error(), "admin:xxxxx@")
}

func TestNewPatroniErrors(t *testing.T) {
	for _, tt := range []struct {
		cfg  discovery.PatroniConfig
		want string
	}{
		{discovery.PatroniConfig{}, "discovery: patroni: no REST API URL"},
		{discovery.PatroniConfig{URLs: []string{"10.0.0.1:8008"}}, `discovery: patroni: URL "10.0.0.1:8008"`},
		{discovery.PatroniConfig{URLs: []string{"http://a:8008", "tcp://b"}}, `discovery: patroni: URL "tcp://b": want http:// or https://`},
		{discovery.PatroniConfig{URLs: []string{"http://a"}, Interval: -1}, "discovery: patroni: Interval -1ns: must not be negative"},
	} {
		_, err := discovery.NewPatroni(tt.cfg)
		assert.ErrorContains(t, err, tt.want)
	}
}

func TestRunTwiceAtOnce(t *testing.T) {
	f := newFakePatroni(t, patroni4Cluster)
	p := newPatroni(t, f.URL)
	w := watch(t, p)
	w.waitFor("the set", func(discovery.State) bool { return true })
	err := p.Run(t.Context(), func(discovery.State) { t.Error("the second Run reported a State") })
	assert.ErrorContains(t, err, "Run called while another Run of the same Discoverer runs")
}

// TestPatroniURLPasswordNotShown: a REST API URL whose password holds
// '/' (or '?', '#', '@') unencoded does not parse as the user meant; the
// error shows no part of the password, whatever part of the URL broke.
func TestPatroniURLPasswordNotShown(t *testing.T) {
	for _, raw := range []string{
		"http://admin:Pa55/w0rd@10.0.0.1:8008",
		"http://admin:12345/w0rd@10.0.0.1:8008",
		"tcp://admin:12345/w0rd@10.0.0.1:8008",
		"http://admin:Pa55?w0rd@10.0.0.1:8008",
		"http://admin:Pa55#w0rd@10.0.0.1:8008",
		"http://admin:Pa55@w0rd@10.0.0.1:8008/x@y",
	} {
		_, err := discovery.NewPatroni(discovery.PatroniConfig{URLs: []string{raw}})
		require.Error(t, err, raw)
		for _, part := range []string{"Pa55", "w0rd", "12345"} {
			assert.NotContains(t, err.Error(), part, raw)
		}
		_, err = discovery.FromSettings(map[string]string{discovery.SettingDiscovery: "patroni", discovery.SettingURLs: raw}, nil)
		require.Error(t, err, raw)
		for _, part := range []string{"Pa55", "w0rd", "12345"} {
			assert.NotContains(t, err.Error(), part, raw)
		}
	}
}

// TestPatroniAPIsEchoOfItsPasswordNotShown: an API given user:password in
// its URL that says the password back (a member named with it, in a
// member refused for its host, in a member's role) gets it into no look's
// error and no node's name or role.
func TestPatroniAPIsEchoOfItsPasswordNotShown(t *testing.T) {
	const secret = "api-s3cr3t-Pa55"
	f := newFakePatroni(t, `{"members": [
 {"name": "n1", "role": "leader", "state": "running", "host": "10.0.0.1", "port": 5432},
 {"name": "`+secret+`", "role": "replica", "state": "streaming", "host": "/tmp", "port": 5432}]}`)
	p := newPatroni(t, strings.Replace(f.URL, "http://", "http://pgxha:"+secret+"@", 1))
	w := watch(t, p)
	st := w.waitFor("an error", func(s discovery.State) bool { return s.Err != nil })
	assert.ErrorContains(t, st.Err, "is a path")
	assert.NotContains(t, st.Err.Error(), secret)

	f.set(http.StatusOK, `{"members": [
 {"name": "n1", "role": "leader", "state": "running", "host": "10.0.0.1", "port": 5432},
 {"name": "`+secret+`", "role": "`+secret+`", "state": "streaming", "host": "10.0.0.2", "port": 5432}]}`)
	p.Refresh()
	st = w.waitFor("the set", func(s discovery.State) bool { return s.Err == nil && len(s.Nodes) == 2 })
	for _, n := range st.Nodes {
		assert.NotContains(t, n.Name, secret)
		assert.NotContains(t, n.Role, secret)
	}
}
