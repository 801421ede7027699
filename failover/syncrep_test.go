package failover_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A cancel request that ends a COMMIT's wait for the synchronous standby
// (pg_cancel_backend here; a pooler's or pgx's cancel-request handler
// alike) makes the server answer COMMIT with a warning, committed on the
// master alone: a failover to the standby loses it. RunInTx reported
// success; it reports the outcome as unknown (not to run again, not to
// count on).
func TestRunInTxSyncWaitCancelledIsCommitUnknown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1, SyncReplicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := readyManager(t, ctx, c, 1, "CREATE TABLE payments (id int PRIMARY KEY)")

	// The synchronous standby stops receiving WAL.
	direct, conninfo := stopReceiving(t, ctx, n2)

	// An operator cancels the statement waiting for the standby.
	cancelled := cancelSyncWaiter(ctx, n1, nil)
	runs := 0
	err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
		runs++
		_, err := tx.Exec(ctx, "INSERT INTO payments VALUES (1)")
		return err
	})
	require.NoError(t, <-cancelled, "the COMMIT's wait was cancelled")
	assert.Equal(t, 1, runs)
	require.ErrorIs(t, err, failover.ErrCommitUnknown)
	require.ErrorIs(t, err, hasql.ErrSyncRepCancelled)

	// The next transaction on the same connections is not taken for it.
	_, err = direct.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = "+pgQuote(conninfo))
	require.NoError(t, err)
	_, err = direct.Exec(ctx, "SELECT pg_reload_conf()")
	require.NoError(t, err)
	require.NoError(t, failover.RunInTx(ctx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO payments VALUES (2)")
		return err
	}))
}

// pgQuote quotes s as an SQL string literal.
// stopReceiving has replica n stop receiving WAL (its primary_conninfo
// emptied and reloaded) and waits until its walreceiver is gone. It
// returns a connection to n, closed with the test, and the
// primary_conninfo it had.
func stopReceiving(t *testing.T, ctx context.Context, n *testcluster.Node) (*pgx.Conn, string) {
	t.Helper()
	direct, err := n.Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { direct.Close(context.Background()) })
	var conninfo string
	require.NoError(t, direct.QueryRow(ctx, "SHOW primary_conninfo").Scan(&conninfo))
	_, err = direct.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = ''")
	require.NoError(t, err)
	_, err = direct.Exec(ctx, "SELECT pg_reload_conf()")
	require.NoError(t, err)
	waitNotStreaming(t, ctx, direct)
	return direct, conninfo
}

// notStreamingSQL is true on a standby that runs no walreceiver and whose
// startup process waits out wal_retrieve_retry_interval: it read a
// primary_conninfo that starts none. A walreceiver still connecting is not
// in pg_stat_wal_receiver, and one the startup process asked for before it
// read the emptied setting may connect after that view was empty: a
// COMMIT on the master would not wait for this standby then.
const notStreamingSQL = `SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'walreceiver')
	AND EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'startup' AND wait_event = 'RecoveryRetrieveRetryInterval')`

// waitNotStreaming waits, on a connection to a standby whose
// primary_conninfo was emptied, until it streams no more.
func waitNotStreaming(t *testing.T, ctx context.Context, direct *pgx.Conn) {
	t.Helper()
	require.Eventually(t, func() bool {
		var ok bool
		return direct.QueryRow(ctx, notStreamingSQL).Scan(&ok) == nil && ok
	}, 30*time.Second, 10*time.Millisecond, "the standby still streams")
}

func pgQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
