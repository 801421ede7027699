package hasql_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A COPY on the master whose node leaves the discovered set while the rows
// are being sent: its connection is cut, and m.Master().CopyFrom returns a
// *NodeLostError naming the node and the master role, as every other
// routed statement does (the node is no longer in the set when the error
// is built).
func TestCopyFromOnAMasterThatLeavesTheSetIsNodeLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	execOn(t, ctx, n1, "CREATE TABLE copied (id int)")
	d := newSetDiscoverer(discovery.Node{Addr: n1.Addr()}, discovery.Node{Addr: n2.Addr()})
	m := newManager(t, ctx, c.DSN(), hasql.WithDiscoverer(d))
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	sent, more := make(chan struct{}), make(chan struct{})
	i := 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		i++
		switch {
		case i == 2:
			close(sent)
			select {
			case <-more:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case i > 100000:
			return nil, nil
		}
		return []any{i}, nil
	})
	done := make(chan error, 1)
	go func() {
		_, err := m.Master().CopyFrom(ctx, pgx.Identifier{"copied"}, []string{"id"}, src)
		done <- err
	}()
	<-sent
	d.set(discovery.Node{Addr: n2.Addr()})
	waitUntil(t, ctx, "n1 left the set", func() bool { return statusAt(m, n1).Addr == "" })
	close(more)
	err := <-done
	require.Error(t, err, "the COPY on a master cut for leaving the set")
	var le *hasql.NodeLostError
	require.True(t, errors.As(err, &le), "CopyFrom's error is a *NodeLostError: %T %v", err, err)
	assert.Equal(t, n1.Addr(), le.Addr)
	assert.Equal(t, hasql.RoleMaster, le.Role, "the COPY was sent to the master")
	assert.True(t, le.MayHaveRun)
}
