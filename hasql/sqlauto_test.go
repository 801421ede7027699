package hasql_test

import (
	"context"
	"database/sql"
	"strconv"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// DB(TargetAuto) splits database/sql traffic by itself, here through sqlx:
// ReadOnly transactions and statements marked with hasql.ReadOnly run on a
// replica, everything else on the master, from one handle.
func TestTargetAutoSqlx(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	db := sqlx.NewDb(m.DB(hasql.TargetAuto), "pgx")
	defer db.Close()

	_, err := db.ExecContext(ctx, "CREATE TABLE items (id int PRIMARY KEY, name text)")
	require.NoError(t, err, "a plain statement goes to the master")
	for _, row := range []map[string]any{{"id": 1, "name": "one"}, {"id": 2, "name": "two"}} {
		_, err = db.NamedExecContext(ctx, "INSERT INTO items VALUES (:id, :name)", row)
		require.NoError(t, err)
	}
	var onReplica bool
	require.NoError(t, db.GetContext(ctx, &onReplica, "SELECT pg_is_in_recovery()"))
	assert.False(t, onReplica, "unmarked statements run on the master")

	// Read-write transaction: the master.
	tx, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, tx.GetContext(ctx, &onReplica, "SELECT pg_is_in_recovery()"))
	assert.False(t, onReplica)
	_, err = tx.ExecContext(ctx, "INSERT INTO items VALUES ($1, $2)", 3, "three")
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	tok, err := m.Token(ctx)
	require.NoError(t, err)
	replayedTo(t, m, tok.LSN)

	type item struct {
		ID   int    `db:"id"`
		Name string `db:"name"`
	}
	for range 5 {
		// ReadOnly transaction: a replica.
		rtx, err := db.BeginTxx(ctx, &sql.TxOptions{ReadOnly: true})
		require.NoError(t, err)
		require.NoError(t, rtx.GetContext(ctx, &onReplica, "SELECT pg_is_in_recovery()"))
		assert.True(t, onReplica, "a ReadOnly transaction runs on a replica")
		var items []item
		require.NoError(t, rtx.SelectContext(ctx, &items, "SELECT id, name FROM items ORDER BY id"))
		assert.Equal(t, []item{{1, "one"}, {2, "two"}, {3, "three"}}, items)
		require.NoError(t, rtx.Commit())

		// A statement marked as a read: a replica; the next unmarked one on
		// the same handle: the master.
		require.NoError(t, db.GetContext(hasql.ReadOnly(ctx), &onReplica, "SELECT pg_is_in_recovery()"))
		assert.True(t, onReplica, "a statement marked ReadOnly runs on a replica")
		require.NoError(t, db.GetContext(ctx, &onReplica, "SELECT pg_is_in_recovery()"))
		assert.False(t, onReplica)
	}

	// A write in a ReadOnly transaction is refused by the server, not sent
	// to the master behind the caller's back.
	rtx, err := db.BeginTxx(ctx, &sql.TxOptions{ReadOnly: true})
	require.NoError(t, err)
	_, err = rtx.ExecContext(ctx, "INSERT INTO items VALUES (4, 'four')")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "read-only")
	require.NoError(t, rtx.Rollback())

	// After has no place in a shared *sql.DB: refused, not ignored.
	withToken := m.DB(hasql.TargetReplica, hasql.After(tok))
	err = withToken.PingContext(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "After is for one request's reads")
	require.NoError(t, withToken.Close())

	// A prepared statement follows its context's mark.
	stmt, err := db.PreparexContext(hasql.ReadOnly(ctx), "SELECT pg_is_in_recovery()")
	require.NoError(t, err)
	require.NoError(t, stmt.GetContext(hasql.ReadOnly(ctx), &onReplica))
	assert.True(t, onReplica)
	require.NoError(t, stmt.Close())

	// After a failover the same handle writes to the new master.
	n2 := c.Nodes()[1]
	require.NoError(t, c.Nodes()[0].Kill())
	require.NoError(t, c.Failover(ctx, n2))
	waitRole(t, m, "n2", hasql.RoleMaster)
	require.Eventually(t, func() bool {
		_, err := db.ExecContext(ctx, "INSERT INTO items VALUES (5, 'five')")
		return err == nil
	}, 30*time.Second, 10*time.Millisecond, "writes resume on the new master")
	var port int
	require.NoError(t, db.GetContext(ctx, &port, "SELECT inet_server_port()"))
	assert.Equal(t, portStr(n2.DirectAddr()), strconv.Itoa(port), "the write went to n2")
}

// A side of a TargetAuto connection whose server hangs holds no statement
// meant for the other side: a write goes out while the replica the
// connection read from is paused, a read while the master it wrote to is.
// (Both sides were validated when database/sql handed the connection out,
// a ping on each: the write waited for the paused replica until its
// deadline, and the healthy side was closed with it.)
func TestTargetAutoSideNotHeldByTheOther(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "hasql_check_timeout", "5s"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	db := m.DB(hasql.TargetAuto)
	defer db.Close()
	db.SetMaxOpenConns(1) // one connection, both sides open on it

	_, err := db.ExecContext(ctx, "CREATE TABLE t (id int)")
	require.NoError(t, err)
	var inRecovery bool
	require.NoError(t, db.QueryRowContext(hasql.ReadOnly(ctx), "SELECT pg_is_in_recovery()").Scan(&inRecovery))
	require.True(t, inRecovery)

	require.NoError(t, n2.Pause())
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = db.ExecContext(wctx, "INSERT INTO t VALUES (1)")
	wcancel()
	require.NoError(t, err, "a write while the replica side hangs")
	require.NoError(t, n2.Resume())
	waitRole(t, m, "n2", hasql.RoleAsyncReplica)

	require.NoError(t, n1.Pause())
	defer func() { require.NoError(t, n1.Resume()) }()
	rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
	defer rcancel()
	require.NoError(t, db.QueryRowContext(hasql.ReadOnly(rctx), "SELECT pg_is_in_recovery()").Scan(&inRecovery), "a read while the master side hangs")
	require.True(t, inRecovery)
	tx, err := db.BeginTx(rctx, &sql.TxOptions{ReadOnly: true})
	require.NoError(t, err, "a read-only transaction while the master side hangs")
	require.NoError(t, tx.Rollback())
}
