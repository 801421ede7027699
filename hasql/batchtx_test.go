//go:build !pgxold

// Batch.BeginTx exists from pgx v5.12 on; `make test` runs the tests against
// the oldest supported pgx too, with the pgxold tag, which leaves this file
// out.

package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/testcluster"
)

// A routed batch that begins a transaction keeps its connection until the
// transaction ends, and the transaction commits on the master.
func TestRoutedBatchBeginTx(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := newManager(t, ctx, c.DSN())
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	_, err := m.Master().Exec(ctx, "CREATE TABLE batchtx (v int)")
	require.NoError(t, err)

	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{})
	b.Queue("INSERT INTO batchtx VALUES (1)")
	br := m.Master().SendBatch(ctx, b)
	tx := br.Tx()
	require.NotNil(t, tx, "the batch began a transaction")
	require.NoError(t, br.Close())
	require.EqualValues(t, 1, inUseTotal(t, m), "the transaction still holds its connection")
	_, err = tx.Exec(ctx, "INSERT INTO batchtx VALUES (2)")
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	require.EqualValues(t, 0, inUseTotal(t, m), "commit released the connection")

	var n int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM batchtx").Scan(&n))
	require.Equal(t, 2, n)

	// A batch without BeginTx has no transaction.
	br = m.Master().SendBatch(ctx, &pgx.Batch{QueuedQueries: []*pgx.QueuedQuery{{SQL: "SELECT 1"}}})
	require.Nil(t, br.Tx())
	require.NoError(t, br.Close())
	require.EqualValues(t, 0, inUseTotal(t, m))
}
