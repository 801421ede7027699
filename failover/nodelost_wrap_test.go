package failover_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// hasql.NodeLost on an idle connection, given an error that wraps a
// *NodeLostError without Autocommit (what a tracked connection makes of a
// lost read, e.g. under CommitToken's token read), keeps the caller's
// wrapping, and ErrTokenUnread with it: Classify still says Permanent ("the
// write is done"), where a bare copy of the inner error read as
// CommitUnknown.
func TestNodeLostKeepsWrapping(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := readyManager(t, ctx, c, 1)
	conn, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	defer conn.Release()
	require.EqualValues(t, 'I', conn.Conn().PgConn().TxStatus())

	inner := &hasql.NodeLostError{Addr: "x", Role: hasql.RoleMaster, MayHaveRun: true, Err: errors.New("EOF")}
	in := fmt.Errorf("%w: CommitToken: %w", hasql.ErrTokenUnread, fmt.Errorf("hasql: token: %w", inner))
	out := hasql.NodeLost(conn, in)
	t.Logf("in:  %v (Classify %v)\nout: %v (Classify %v)", in, failover.Classify(in), out, failover.Classify(out))
	assert.ErrorIs(t, out, hasql.ErrTokenUnread, "NodeLost dropped the error's wrapping")
	assert.Equal(t, failover.Classify(in), failover.Classify(out))
}
