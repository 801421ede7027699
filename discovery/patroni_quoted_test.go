package discovery_test

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
)

// A member whose port is a huge string that is not a number: the look's
// error quotes a bounded part of it.
func TestPatroniHugePortQuotedBounded(t *testing.T) {
	big := strings.Repeat("9x", 1<<20)
	f := newFakePatroni(t, `{"members": [{"name": "n1", "role": "leader", "host": "10.0.0.1", "port": "`+big+`"}]}`)
	p := newPatroni(t, f.URL)
	w := watch(t, p)
	errQuotesBoundedPart(t, w, "the member's port")
}

// The status line of an API given user:password that says the password
// back near the 128th byte: no part of the password is in the error (a cut
// through it would leave its first bytes).
func TestPatroniStatusLineCutShowsNoPartOfPassword(t *testing.T) {
	const secret = "Zq9xWvLm3Kp0Tr7"
	// resp.Status is "503 " + the text: the password starts at byte 118.
	addr := statusLineServer(t, "503 "+strings.Repeat("A", 113)+" "+secret)
	p := newPatroni(t, "http://pgxha:"+secret+"@"+addr)
	w := watch(t, p)
	st := w.waitFor("err", func(s discovery.State) bool { return s.Err != nil })
	assert.NotContains(t, st.Err.Error(), secret[:6], "%v", st.Err)
}

// A member refused for its host whose name says the password back near
// the 128th byte: no part of the password is in the error.
func TestPatroniMemberNameCutShowsNoPartOfPassword(t *testing.T) {
	const secret = "Zq9xWvLm3Kp0Tr7"
	name := strings.Repeat("n", 120) + "-" + secret
	f := newFakePatroni(t, `{"members": [
 {"name": "n1", "role": "leader", "state": "running", "host": "10.0.0.1", "port": 5432},
 {"name": "`+name+`", "role": "replica", "state": "streaming", "host": "/tmp", "port": 5432}]}`)
	p := newPatroni(t, strings.Replace(f.URL, "http://", "http://pgxha:"+secret+"@", 1))
	w := watch(t, p)
	st := w.waitFor("err", func(s discovery.State) bool { return s.Err != nil })
	assert.ErrorContains(t, st.Err, "is a path")
	assert.NotContains(t, st.Err.Error(), secret[:6], "%v", st.Err)
}

// A member that advertises an API URL of a huge host name: when the look
// falls back to it, the error quotes a bounded part of it.
func TestPatroniMemberAPIURLQuotedBounded(t *testing.T) {
	huge := "http://" + strings.Repeat("a", 200<<10) + ":8008/patroni"
	f := newFakePatroni(t, `{"members": [{"name": "n1", "role": "leader", "host": "10.0.0.1", "port": 5432, "api_url": "`+huge+`"}]}`)
	p := newPatroni(t, f.URL)
	w := watch(t, p)
	w.waitFor("the set", addrsAre("10.0.0.1:5432"))
	f.set(http.StatusServiceUnavailable, "")
	p.Refresh()
	errQuotesBoundedPart(t, w, "a member's api_url")
}

// An API that redirects /cluster to another server: the error of a
// redirect it cannot follow quotes a bounded part of its Location.
func TestPatroniRedirectLocationQuotedBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "http://%zz"+strings.Repeat("B", 200<<10))
		w.WriteHeader(http.StatusFound)
	}))
	defer srv.Close()
	p := newPatroni(t, srv.URL)
	w := watch(t, p)
	errQuotesBoundedPart(t, w, "the API's Location header")
}

// A configured API that redirects /cluster to a server of another host:
// the nodes are not taken from an answer no configured API gave.
func TestPatroniAnswerComesFromAConfiguredAPI(t *testing.T) {
	var asked atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		fmt.Fprint(w, `{"members": [{"name": "x", "role": "leader", "host": "10.6.6.6", "port": 5432}]}`)
	}))
	defer other.Close()
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, otherURL+"/cluster", http.StatusFound)
	}))
	defer srv.Close()
	p := newPatroni(t, srv.URL)
	w := watch(t, p)
	// The first state comes once the look has ended: a redirect it
	// followed would have asked the other server by then.
	st := w.waitFor("a state", func(discovery.State) bool { return true })
	assert.Zero(t, asked.Load(), "the redirect was followed to %s", otherURL)
	assert.ErrorContains(t, st.Err, "a redirect, not followed")
	assert.NotEqual(t, []string{"10.6.6.6:5432"}, addrs(st.Nodes))
}

// A configured https API that redirects /cluster to a plain http URL: the
// answer is not taken over plain http (nor is the API's password sent there).
func TestPatroniHTTPSAnswerNeverComesOverHTTP(t *testing.T) {
	var asked, withAuth atomic.Int64
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		if r.Header.Get("Authorization") != "" {
			withAuth.Add(1)
		}
		fmt.Fprint(w, `{"members": [{"name": "x", "role": "leader", "host": "10.6.6.6", "port": 5432}]}`)
	}))
	defer plain.Close()
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/cluster", http.StatusFound)
	}))
	defer secure.Close()
	// The Discoverer's own client, which trusts the system pool: the
	// test server's certificate is put there.
	certFile := t.TempDir() + "/ca.pem"
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: secure.Certificate().Raw}), 0o600))
	t.Setenv("SSL_CERT_FILE", certFile)
	p := newPatroni(t, strings.Replace(secure.URL, "https://", "https://pgxha:s3cret@", 1))
	w := watch(t, p)
	st := w.waitFor("a state", func(discovery.State) bool { return true })
	assert.Zero(t, asked.Load(), "the https API's redirect to %s was followed; state %v", plain.URL, describe([]discovery.State{st}))
	assert.Zero(t, withAuth.Load(), "the API's password went to the plain http URL")
	assert.NotEqual(t, []string{"10.6.6.6:5432"}, addrs(st.Nodes))
}

// An API given user:password that names a member with the password glued
// to other letters, a member refused for its host: the error that quotes
// the name does not hold the password. (A member's name and tags, which
// route, keep it where it does not stand whole: see
// TestPatroniPasswordInsideHostNamesKeepsAddresses.)
func TestPatroniErrorQuotesNoPasswordGluedToLetters(t *testing.T) {
	const secret = "api-s3cr3t-Pa55"
	f := newFakePatroni(t, `{"members": [
 {"name": "n1", "role": "leader", "state": "running", "host": "10.0.0.1", "port": 5432},
 {"name": "node`+secret+`x", "role": "replica", "state": "streaming", "host": "/tmp/x`+secret+`y", "port": 5432}]}`)
	p := newPatroni(t, strings.Replace(f.URL, "http://", "http://pgxha:"+secret+"@", 1))
	w := watch(t, p)
	st := w.waitFor("err", func(s discovery.State) bool { return s.Err != nil })
	assert.ErrorContains(t, st.Err, "is a path")
	assert.NotContains(t, st.Err.Error(), secret, "%v", st.Err)
}

// A member's advertised API whose host holds a C1 control character
// (CSI, U+009B): when the look falls back to it, the error holds no
// control character.
func TestPatroniMemberAPIURLEscapedInError(t *testing.T) {
	f := newFakePatroni(t, `{"members": [{"name": "n1", "role": "leader", "host": "10.0.0.1", "port": 5432, "api_url": "http://a\u009b2Jb:8008/patroni"}]}`)
	p := newPatroni(t, f.URL)
	w := watch(t, p)
	w.waitFor("the set", addrsAre("10.0.0.1:5432"))
	f.set(http.StatusServiceUnavailable, "")
	p.Refresh()
	st := w.waitFor("err", func(s discovery.State) bool { return s.Err != nil })
	assert.NotContains(t, st.Err.Error(), "\u009b", "%q", st.Err.Error())
}

// A member that Patroni lists with a port that cannot be a node's (0, or
// over 65535) is left out, as a member without a host is: the members
// added beside it are still followed.
func TestPatroniMemberWithBadPortLeftOut(t *testing.T) {
	f := newFakePatroni(t, `{"members": [
 {"name": "n1", "role": "leader", "state": "running", "host": "10.0.0.1", "port": 5432},
 {"name": "n2", "role": "replica", "state": "streaming", "host": "10.0.0.2", "port": 5432}]}`)
	p := newPatroni(t, f.URL)
	w := watch(t, p)
	w.waitFor("the first set", addrsAre("10.0.0.1:5432", "10.0.0.2:5432"))
	for _, port := range []string{"0", "70000"} {
		f.set(http.StatusOK, `{"members": [
 {"name": "n1", "role": "leader", "state": "running", "host": "10.0.0.1", "port": 5432},
 {"name": "n2", "role": "replica", "state": "streaming", "host": "10.0.0.2", "port": 5432},
 {"name": "n3", "role": "replica", "state": "streaming", "host": "10.0.0.3", "port": 5432},
 {"name": "n4", "role": "replica", "state": "starting", "host": "10.0.0.4", "port": `+port+`}]}`)
		p.Refresh()
		st := w.waitFor("the next look", func(s discovery.State) bool {
			return s.Err != nil && strings.Contains(s.Err.Error(), `port "`+port+`"`) || len(s.Nodes) == 3
		})
		assert.NoError(t, st.Err, "port %s", port)
		assert.Equal(t, []string{"10.0.0.1:5432", "10.0.0.2:5432", "10.0.0.3:5432"}, addrs(st.Nodes), "port %s", port)
	}
}

// errQuotesBoundedPart waits for the watched discoverer's error and checks
// that it quotes a bounded part of what (a huge field of the API's answer).
func errQuotesBoundedPart(t *testing.T, w *watcher, what string) {
	t.Helper()
	st := w.waitFor("err", func(s discovery.State) bool { return s.Err != nil })
	assert.Less(t, len(st.Err.Error()), 4<<10, "the look's error holds %d bytes of %s", len(st.Err.Error()), what)
}

// A member whose tags have a key and a value of 1 MiB each: both are kept
// cut (they show in NodeStatus.Tags and the health handler's JSON), at a
// character's start.
func TestPatroniTagsAreCut(t *testing.T) {
	big := strings.Repeat("é", 512<<10)
	f := newFakePatroni(t, `{"members": [{"name": "n1", "role": "leader", "state": "running", "host": "10.0.0.1", "port": 5432,
 "tags": {"zone": "`+big+`", "`+big+`": "x"}}]}`)
	p := newPatroni(t, f.URL)
	w := watch(t, p)
	st := w.waitFor("the set", addrsAre("10.0.0.1:5432"))
	require.Len(t, st.Nodes[0].Tags, 2)
	for k, v := range st.Nodes[0].Tags {
		assert.LessOrEqual(t, len(k), 256, "a tag's key of %d bytes", len(k))
		assert.LessOrEqual(t, len(v), 256, "a tag's value of %d bytes", len(v))
		assert.True(t, utf8.ValidString(k) && utf8.ValidString(v), "a tag cut inside a character")
	}
}
