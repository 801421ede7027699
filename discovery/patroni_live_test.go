//go:build linux

package discovery_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/testcluster"
)

// nodeNamed returns the node called name in s, or nil.
func nodeNamed(s discovery.State, name string) *discovery.Node {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name {
			return &s.Nodes[i]
		}
	}
	return nil
}

// replicating reports whether Patroni shows n as a replica that replicates:
// "streaming" in newer Patroni, "running" with a known lag in 3.0.
func replicating(n *discovery.Node) bool {
	return n != nil && n.Lag.Known && (n.State == "streaming" || n.State == "running")
}

// roles returns member name → role.
func roles(s discovery.State) map[string]string {
	out := map[string]string{}
	for _, n := range s.Nodes {
		out[n.Name] = n.Role
	}
	return out
}

// TestPatroniLive follows a real Patroni cluster: its members and roles,
// tags set while it runs, and a failover Patroni decides on its own after
// the leader is killed, with the only configured REST API that of the
// killed leader.
func TestPatroniLive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1, Backend: testcluster.BackendPatroni})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]

	p, err := discovery.NewPatroni(discovery.PatroniConfig{
		URLs:        []string{n1.PatroniURL()},
		Interval:    200 * time.Millisecond,
		MinInterval: 50 * time.Millisecond,
	})
	require.NoError(t, err)
	w := watch(t, p)

	st := w.waitFor("three members, settled", func(s discovery.State) bool {
		return s.Err == nil && len(s.Nodes) == 3 && replicating(&s.Nodes[1]) && replicating(&s.Nodes[2])
	})
	assert.Equal(t, map[string]string{"n1": "leader", "n2": "sync_standby", "n3": "replica"}, roles(st))
	for i, n := range []*testcluster.Node{n1, n2, n3} {
		got := st.Nodes[i]
		assert.Equal(t, n.Name(), got.Name)
		assert.Equal(t, n.Addr(), got.Addr, "the address Patroni advertises, which clients use")
		assert.Nil(t, got.Tags, "Patroni lists no false tag")
	}
	assert.Equal(t, "running", st.Nodes[0].State)
	assert.False(t, st.Nodes[0].Lag.Known, "Patroni reports no lag for its leader")

	t.Run("tags", func(t *testing.T) {
		require.NoError(t, n3.SetPatroniTags(ctx, map[string]any{"noloadbalance": true, "nofailover": true, "zone": "b"}))
		p.Refresh()
		st := w.waitFor("n3's tags", func(s discovery.State) bool {
			n := nodeNamed(s, "n3")
			return s.Err == nil && n != nil && n.Tags != nil
		})
		n := nodeNamed(st, "n3")
		assert.Equal(t, map[string]string{"noloadbalance": "true", "nofailover": "true", "zone": "b"}, n.Tags)
		assert.True(t, n.Tag(discovery.TagNoLoadBalance))
		assert.True(t, n.Tag(discovery.TagNoFailover))
		assert.Nil(t, nodeNamed(st, "n2").Tags)
	})

	t.Run("Patroni fails over: the set follows, through the other members' APIs", func(t *testing.T) {
		require.NoError(t, n1.Kill())
		// n3 has nofailover: Patroni promotes n2, the sync standby. n1's
		// member key expires, so it leaves the set; the configured API
		// (n1's) is down, so the looks go to n2's and n3's.
		st := w.waitFor("n2 leads, n1 gone", func(s discovery.State) bool {
			return s.Err == nil && slices.Equal(addrs(s.Nodes), []string{n2.Addr(), n3.Addr()}) && nodeNamed(s, "n2").Role == "leader"
		})
		assert.Equal(t, "running", nodeNamed(st, "n2").State)
		assert.Equal(t, n2, c.Master(), "the set agrees with the cluster's own bookkeeping")
	})

	t.Run("the old leader rejoins: it is back in the set as a replica", func(t *testing.T) {
		require.NoError(t, n1.Start())
		require.NoError(t, c.Rejoin(ctx, n1))
		st := w.waitFor("three members again", func(s discovery.State) bool {
			return s.Err == nil && len(s.Nodes) == 3 && replicating(nodeNamed(s, "n1"))
		})
		assert.NotEqual(t, "leader", nodeNamed(st, "n1").Role)
		assert.Equal(t, "leader", nodeNamed(st, "n2").Role)
	})
}
