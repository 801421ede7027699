//go:build linux

package hasql_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestDiscoveredNameFollowsTheSource: Patroni's API first gives the
// replicas' addresses each other's member names (two pods that swapped
// addresses, the API behind for a moment), then their own. A node's name
// is what its master's walsender rows are matched by: the nodes must take
// the names the source gives now, so that SyncOnly reads go to the sync
// replica, n2. (A node kept the name it was made with, and the async n3
// served them for good.) The API is the test's own (the servers are a real
// cluster): a real Patroni names its members after the servers.
func TestDiscoveredNameFollowsTheSource(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	member := func(name, role string, n *testcluster.Node) patroniMember {
		host, port, err := net.SplitHostPort(n.Addr())
		require.NoError(t, err)
		p, err := strconv.Atoi(port)
		require.NoError(t, err)
		return patroniMember{Name: name, Role: role, State: "streaming", Host: host, Port: p}
	}
	var members atomic.Value
	members.Store([]patroniMember{member("n1", "leader", n1), member("n3", "sync_standby", n2), member("n2", "replica", n3)})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"members": members.Load()})
	}))
	defer api.Close()

	cfg, err := hasql.ParseConfig(withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, err)
	cfg.Logger = quiet
	cfg.Discoverer, err = discovery.NewPatroni(discovery.PatroniConfig{URLs: []string{api.URL}, Interval: 100 * time.Millisecond})
	require.NoError(t, err)
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	waitUntil(t, ctx, "the nodes go by the names given", func() bool {
		return statusAt(m, n2).Name == "n3" && statusAt(m, n3).Name == "n2"
	})

	members.Store([]patroniMember{member("n1", "leader", n1), member("n2", "sync_standby", n2), member("n3", "replica", n3)})
	waitUntil(t, ctx, "the nodes take the names given now, n2 sync", func() bool {
		s2, s3 := statusAt(m, n2), statusAt(m, n3)
		return s2.Name == "n2" && s3.Name == "n3" && s2.Role == hasql.RoleSyncReplica && s3.Role == hasql.RoleAsyncReplica
	})
	for range 5 {
		var who string
		require.NoError(t, m.Replica(hasql.SyncOnly()).QueryRow(ctx, "SELECT current_setting('cluster_name')").Scan(&who))
		require.Equal(t, "n2", who, "a SyncOnly read served by the async replica: %v", m.Nodes())
	}
	require.Equal(t, n1.Addr(), m.Stat().Master)
}
