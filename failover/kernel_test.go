package failover_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestKernelLiveness: with a check interval far longer than the test, a
// replica whose network path is black-holed in the kernel (iptables in its
// network namespace: nothing answers, not even TCP keepalives) and one
// whose host dies behind such a partition (its processes killed, their
// closes dropped, its network namespace torn down) are noticed by a Manager
// whose check connections have the kernel watch them (hasql_check_keepalive),
// and not by one without it, which sees them only at its next check.
//
// It needs faults below TCP: the local backend's fault proxy answers
// keepalives itself. make compose-test runs it against docker compose.
func TestKernelLiveness(t *testing.T) {
	if os.Getenv("PGXHA_TESTCLUSTER") != string(testcluster.BackendCompose) {
		t.Skip("needs partitions in the kernel: run with PGXHA_TESTCLUSTER=compose (make compose-test does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	// The containers' own addresses: a published port goes through
	// Docker's proxy, whose kernel would answer the keepalives.
	var addrs []string
	netAddr := map[*testcluster.Node]string{}
	for _, n := range c.Nodes() {
		a, err := n.NetworkAddr()
		require.NoError(t, err)
		addrs = append(addrs, a)
		netAddr[n] = a
	}
	dsn := c.DSNFor(addrs...)
	// No SQL check falls due while the test runs: only the kernel can
	// tell. The promotion watch stays off, so that no probe runs either.
	const quiet = "hasql_check_interval=10m&hasql_watch_promotion=false"
	watched, err := hasql.New(ctx, dsn+"&"+quiet+"&hasql_check_keepalive=1s", hasql.WithLogger(testLogger(t)))
	require.NoError(t, err)
	defer watched.Close()
	unwatched, err := hasql.New(ctx, dsn+"&"+quiet+"&hasql_check_keepalive=0", hasql.WithLogger(testLogger(t)))
	require.NoError(t, err)
	defer unwatched.Close()
	replicas := c.Replicas()
	require.Len(t, replicas, 2)
	require.NoError(t, watched.WaitReady(ctx, 1, 2))
	require.NoError(t, unwatched.WaitReady(ctx, 1, 2))

	noticed := func(m *hasql.Manager, n *testcluster.Node) bool {
		for _, st := range m.Nodes() {
			if st.Addr == netAddr[n] {
				return !st.Up || st.Suspect
			}
		}
		t.Fatalf("%s is not in the node set", n)
		return false
	}
	for _, tc := range []struct {
		fault string
		node  *testcluster.Node
		do    func(*testcluster.Node) error
	}{
		{"partition", replicas[0], (*testcluster.Node).Partition},
		{"dead host", replicas[1], func(n *testcluster.Node) error {
			// Partitioned first, so that the closes of its dying processes
			// never leave its network namespace.
			if err := n.Partition(); err != nil {
				return err
			}
			return n.Kill()
		}},
	} {
		t.Logf("%s of %s", tc.fault, tc.node)
		require.False(t, noticed(watched, tc.node))
		begin := time.Now()
		require.NoError(t, tc.do(tc.node))
		require.Eventually(t, func() bool { return noticed(watched, tc.node) }, 2*time.Minute, 10*time.Millisecond,
			"%s of %s: the Manager with keepalive notices", tc.fault, tc.node)
		t.Logf("%s of %s noticed after %s", tc.fault, tc.node, time.Since(begin).Round(time.Millisecond))
		require.False(t, noticed(unwatched, tc.node),
			"%s of %s: the Manager without keepalive has no way to notice before its next check", tc.fault, tc.node)
	}
}
