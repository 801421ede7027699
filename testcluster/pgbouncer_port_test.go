package testcluster

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// A PgBouncer whose port another program holds (here the other node's
// PgBouncer) moves to another port: a dial alone was answered by the
// program that held it, and the node's clients reached the other node's
// server.
func TestPgBouncerOnATakenPortMoves(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := New(t, Options{Replicas: 1, PgBouncer: PgBouncerTransaction})
	n1 := c.Nodes()[0].drv.(*localNode)
	n2 := c.Nodes()[1].drv.(*localNode)

	n2.mu.Lock()
	require.NoError(t, n2.bouncer.stop())
	n2.bouncer.port = n1.bouncer.port
	err := n2.startBouncerLocked(ctx)
	moved := n2.bouncer.port
	n2.mu.Unlock()
	require.NoError(t, err)
	require.NotEqual(t, n1.bouncer.port, moved)

	conn, err := c.connect(ctx, c.Nodes()[1].Addr())
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var port int
	var standby bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT inet_server_port(), pg_is_in_recovery()", pgx.QueryExecModeSimpleProtocol).Scan(&port, &standby))
	_, want, err := net.SplitHostPort(c.Nodes()[1].DirectAddr())
	require.NoError(t, err)
	require.Equal(t, want, strconv.Itoa(port), "n2's address reaches the server on port %d", port)
	require.True(t, standby)
}

// freePort never returns a port twice in one process: every node's ports
// are picked before any of them is bound.
func TestFreePortNotTwice(t *testing.T) {
	seen := make(map[int]bool)
	for range 500 {
		p, err := freePort()
		require.NoError(t, err)
		require.False(t, seen[p], "port %d returned twice", p)
		seen[p] = true
	}
}
