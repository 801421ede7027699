package hasql_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
)

// TestDiscoveredMemberTextBoundedInLogs: a Patroni member's name and host
// are what the API chooses. A member whose host is longer than a DNS name
// may be is left out; a name of 200 KiB is cut: no log line the Manager
// writes about the nodes holds either whole.
func TestDiscoveredMemberTextBoundedInLogs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	port, port2 := closedPort(t), closedPort(t)
	longName := strings.Repeat("n", 200<<10)
	longHost := strings.Repeat("h", 200<<10)
	api := fakePatroni(t, false,
		patroniMember{Name: "n1", Role: "leader", State: "running", Host: "127.0.0.1", Port: port},
		patroniMember{Name: longName, Role: "replica", State: "running", Host: "127.0.0.1", Port: port2},
		patroniMember{Name: "n3", Role: "replica", State: "running", Host: longHost, Port: 5432})
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/app?sslmode=disable&hasql_check_timeout=200ms&hasql_check_interval=100ms", port))
	require.NoError(t, err)
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Discoverer, err = discovery.NewPatroni(discovery.PatroniConfig{URLs: []string{api.URL}, Interval: 100 * time.Millisecond})
	require.NoError(t, err)
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	// Both members that can be nodes are checked and found down (their
	// ports are closed): the lines about them are written.
	require.Eventually(t, func() bool {
		return strings.Count(logs.String(), "node down") >= 2 && strings.Contains(logs.String(), fmt.Sprintf("127.0.0.1:%d", port2))
	}, 30*time.Second, 10*time.Millisecond, "the nodes are seen down: %s", logs.String())
	var addrs []string
	for _, n := range m.Nodes() {
		addrs = append(addrs, n.Addr)
		assert.LessOrEqual(t, len(n.Name), 256, "a node's name is cut")
	}
	assert.ElementsMatch(t, []string{fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", port2)}, addrs,
		"the member whose host is longer than a DNS name is left out")
	for _, line := range strings.Split(logs.String(), "\n") {
		if len(line) >= 4<<10 {
			t.Errorf("a log line of %d bytes: %.200s", len(line), line)
		}
	}
}
