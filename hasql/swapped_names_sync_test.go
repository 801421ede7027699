//go:build linux

package hasql_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A Patroni API whose member names lag behind the addresses (two replicas'
// pods swapped addresses; the API has not caught up), the members' hosts
// being the connection string's (trusted). n2 is the synchronous replica,
// n3 the asynchronous one; the API names the address of n2 "n3" and the
// address of n3 "n2". Each replica's own check shows its walreceiver's
// application_name (the check user is a superuser): the server at the
// address named "n2" streams as n3. SyncOnly must not read from the
// asynchronous server: a commit acknowledged by the sync replica may be
// missing there.
func TestStaleMemberNamesSendNoSyncOnlyReadToTheAsyncReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	api := namesLaggingPatroni(t, [3]string{"n1", n1.Addr(), "leader"}, [3]string{"n3", n2.Addr(), "sync_standby"},
		[3]string{"n2", n3.Addr(), "replica"})
	p, err := discovery.NewPatroni(discovery.PatroniConfig{URLs: []string{api.URL}, Interval: 100 * time.Millisecond,
		MinInterval: 10 * time.Millisecond, Timeout: 5 * time.Second})
	require.NoError(t, err)
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"), hasql.WithDiscoverer(p))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	// Several reads: each must reach the synchronous server, n2, or fail;
	// its own walreceiver's name makes it known sync.
	served := 0
	for i := 0; i < 10; i++ {
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		conn, err := m.AcquireReplica(actx, hasql.SyncOnly())
		acancel()
		if err != nil {
			continue // no sync replica claimed: safe
		}
		var name string
		require.NoError(t, conn.QueryRow(ctx, "SELECT current_setting('cluster_name')").Scan(&name))
		conn.Release()
		served++
		assert.Equal(t, "n2", name, "a SyncOnly read reached the asynchronous server; nodes: %+v", m.Nodes())
		if name != "n2" {
			break
		}
	}
	assert.Positive(t, served, "no SyncOnly read was served: the synchronous replica is known by its walreceiver's name; nodes: %+v", m.Nodes())
}

// namesLaggingPatroni is a Patroni API whose GET /cluster lists members,
// each a name, a host:port and a role.
func namesLaggingPatroni(t *testing.T, members ...[3]string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var parts []string
		for _, mb := range members {
			host, port, _ := net.SplitHostPort(mb[1])
			parts = append(parts, fmt.Sprintf(`{"name":%q,"role":%q,"state":"running","host":%q,"port":%s}`, mb[0], mb[2], host, port))
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"members":[%s]}`, strings.Join(parts, ","))
	}))
	t.Cleanup(srv.Close)
	return srv
}
