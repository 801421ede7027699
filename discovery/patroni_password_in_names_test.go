package discovery_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
)

// The API's password is a word that the cluster's honest host and member
// names contain, glued to digits ("postgres" for hosts postgres1,
// postgres2): the node set keeps the members' addresses and names as the
// API gave them, or the library would connect to hosts that do not exist.
func TestPatroniPasswordInsideHostNamesKeepsAddresses(t *testing.T) {
	f := newFakePatroni(t, `{"members": [
 {"name": "postgres1", "role": "leader", "state": "running", "host": "postgres1.db.internal", "port": 5432, "api_url": "http://postgres1.db.internal:8008/patroni"},
 {"name": "postgres2", "role": "replica", "state": "streaming", "host": "postgres2.db.internal", "port": 5432, "tags": {"zone": "postgres2zone"}}]}`)
	p := newPatroni(t, strings.Replace(f.URL, "http://", "http://patroni:postgres@", 1))
	w := watch(t, p)
	st := w.waitFor("the set", func(s discovery.State) bool { return s.Err != nil || len(s.Nodes) > 0 })
	require.NoError(t, st.Err)
	assert.Equal(t, []discovery.Node{
		{Addr: "postgres1.db.internal:5432", Name: "postgres1", Role: "leader", State: "running"},
		{Addr: "postgres2.db.internal:5432", Name: "postgres2", Role: "replica", State: "streaming",
			Tags: map[string]string{"zone": "postgres2zone"}},
	}, st.Nodes)
}

// The API's password is a word of the members' host names, between
// hyphens and dots ("postgres" for postgres-1.db.internal): the node set
// keeps each member's address as the API gave it.
func TestPatroniPasswordAsWordOfHostNameKeepsAddresses(t *testing.T) {
	f := newFakePatroni(t, `{"members": [
 {"name": "n1", "role": "leader", "state": "running", "host": "postgres-1.db.internal", "port": 5432},
 {"name": "n2", "role": "replica", "state": "streaming", "host": "postgres-2.db.internal", "port": 5432}]}`)
	p := newPatroni(t, strings.Replace(f.URL, "http://", "http://patroni:postgres@", 1))
	w := watch(t, p)
	st := w.waitFor("the set", func(s discovery.State) bool { return s.Err != nil || len(s.Nodes) > 0 })
	require.NoError(t, st.Err)
	var addrs []string
	for _, n := range st.Nodes {
		addrs = append(addrs, n.Addr)
	}
	assert.Equal(t, []string{"postgres-1.db.internal:5432", "postgres-2.db.internal:5432"}, addrs)
}
