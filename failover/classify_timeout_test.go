package failover_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
)

// hungServer accepts connections and, when answer is set, lets them log in
// and then never answers a query (a statement waiting, for the synchronous
// standby say); otherwise it never answers the startup.
func hungServer(t *testing.T, answer bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				be := pgproto3.NewBackend(c, c)
				msg, err := be.ReceiveStartupMessage()
				if err != nil {
					return
				}
				if _, ok := msg.(*pgproto3.StartupMessage); ok && answer {
					be.Send(&pgproto3.AuthenticationOk{})
					be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
					if be.Flush() != nil {
						return
					}
				}
				for {
					if _, err := be.Receive(); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestClassifyStatementCutByTheCallersDeadline: a statement that was sent
// and then cut by the caller's deadline (pgx's timeout error, wrapping
// context.DeadlineExceeded) may have run, and committed if it ran outside
// a transaction (an INSERT of m.Master().Exec whose commit waits for a
// synchronous standby): Classify must not call it retryable. A connect
// that timed out still says the node did not answer.
func TestClassifyStatementCutByTheCallersDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, "postgres://app@"+hungServer(t, true)+"/app?sslmode=disable")
	require.NoError(t, err)
	defer conn.Close(context.Background())
	short, c := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = conn.Exec(short, "INSERT INTO t VALUES (1)")
	c()
	require.Error(t, err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	class := failover.Classify(err)
	assert.False(t, class.Retryable(), "a statement cut by the caller's deadline: %v", class)
	assert.Equal(t, failover.CommitUnknown, failover.ClassifyCommit(err))

	_, err = pgx.Connect(ctx, "postgres://app@"+hungServer(t, false)+"/app?sslmode=disable&connect_timeout=1")
	require.Error(t, err)
	assert.Equal(t, failover.NodeDown, failover.Classify(err), "a connect that timed out: %v", err)
}
