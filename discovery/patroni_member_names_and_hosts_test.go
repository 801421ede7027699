package discovery_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
)

// The API's password is a word of the members' names, between hyphens
// (Patroni on Kubernetes names members after their pods: postgres-0,
// postgres-1 for a cluster named "postgres", and the password of the
// REST API is "postgres"). A member's name is the application_name its
// walsender row goes by: the node set keeps it as the API gave it.
func TestPatroniPasswordAsWordOfMemberNameKeepsNames(t *testing.T) {
	f := newFakePatroni(t, `{"members": [
 {"name": "postgres-0", "role": "leader", "state": "running", "host": "10.0.0.1", "port": 5432},
 {"name": "postgres-1", "role": "replica", "state": "streaming", "host": "10.0.0.2", "port": 5432, "tags": {"zone": "postgres-east"}}]}`)
	p := newPatroni(t, strings.Replace(f.URL, "http://", "http://patroni:postgres@", 1))
	w := watch(t, p)
	st := w.waitFor("the set", func(s discovery.State) bool { return s.Err != nil || len(s.Nodes) > 0 })
	require.NoError(t, st.Err)
	assert.Equal(t, []discovery.Node{
		{Addr: "10.0.0.1:5432", Name: "postgres-0", Role: "leader", State: "running"},
		{Addr: "10.0.0.2:5432", Name: "postgres-1", Role: "replica", State: "streaming",
			Tags: map[string]string{"zone": "postgres-east"}},
	}, st.Nodes)
}

// An API given user:password that says the password back as a member's
// host: the node set, which reaches the Manager's status, logs and metric
// labels (a node's address), does not show it.
func TestPatroniMemberHostThatIsThePasswordIsNotShown(t *testing.T) {
	const secret = "api-s3cr3t-Pa55"
	f := newFakePatroni(t, `{"members": [
 {"name": "n1", "role": "leader", "state": "running", "host": "10.0.0.1", "port": 5432},
 {"name": "n2", "role": "replica", "state": "streaming", "host": "`+secret+`", "port": 5432}]}`)
	p := newPatroni(t, strings.Replace(f.URL, "http://", "http://pgxha:"+secret+"@", 1))
	w := watch(t, p)
	st := w.waitFor("the set", func(s discovery.State) bool { return s.Err != nil || len(s.Nodes) > 0 })
	for _, n := range st.Nodes {
		assert.NotContains(t, n.Addr, secret)
	}
	if st.Err != nil {
		assert.NotContains(t, st.Err.Error(), secret)
	}
}
