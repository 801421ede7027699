package hasql_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestTargetAutoPreparedStmtInReadOnlyTx: a statement prepared on a
// DB(TargetAuto) handle (db.PrepareContext, as sqlc's prepared queries are)
// and used in a ReadOnly transaction through tx.StmtContext (sqlc's WithTx)
// ran on the side of the database/sql connection it was prepared on (the
// master), outside the transaction: the INSERT committed on the master,
// and the transaction's Rollback did not undo it. It runs in the
// transaction now (on the replica, which refuses the write).
func TestTargetAutoPreparedStmtInReadOnlyTx(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1 := c.Nodes()[0]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	db := m.DB(hasql.TargetAuto)
	defer db.Close()
	db.SetMaxOpenConns(1) // one database/sql connection: deterministic reuse

	_, err := db.ExecContext(ctx, "CREATE TABLE escaped (v int)")
	require.NoError(t, err)
	ins, err := db.PrepareContext(ctx, "INSERT INTO escaped VALUES ($1)")
	require.NoError(t, err)
	defer ins.Close()
	where, err := db.PrepareContext(ctx, "SELECT pg_is_in_recovery()")
	require.NoError(t, err)
	defer where.Close()

	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	require.NoError(t, err)
	var inTx bool
	require.NoError(t, tx.QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&inTx))
	require.True(t, inTx, "the premise: the ReadOnly transaction runs on the replica")
	var stmtIn bool
	require.NoError(t, tx.StmtContext(ctx, where).QueryRowContext(ctx).Scan(&stmtIn))
	_, insErr := tx.StmtContext(ctx, ins).ExecContext(ctx, 1)
	require.NoError(t, tx.Rollback())

	rows := lsnOn(t, ctx, n1, "SELECT count(*) FROM escaped")
	assert.True(t, stmtIn, "a prepared statement used in the ReadOnly transaction runs in it (on the replica)")
	assert.Error(t, insErr, "an INSERT in a ReadOnly transaction is refused")
	assert.Zero(t, rows, "the INSERT in the rolled-back ReadOnly transaction committed on the master (%v)", insErr)

	// Outside a transaction the same statements pick their side by the
	// context each time they run.
	_, err = ins.ExecContext(ctx, 2)
	require.NoError(t, err, "the prepared INSERT on the master")
	assert.EqualValues(t, 1, lsnOn(t, ctx, n1, "SELECT count(*) FROM escaped"))
	var onReplica, onMaster bool
	require.NoError(t, where.QueryRowContext(hasql.ReadOnly(ctx)).Scan(&onReplica))
	require.NoError(t, where.QueryRowContext(ctx).Scan(&onMaster))
	assert.True(t, onReplica, "a prepared read marked ReadOnly runs on the replica")
	assert.False(t, onMaster, "a prepared read not marked runs on the master")
}
