//go:build linux

package hasql_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// Every routed path, with and without errors, leaves the in-use count at
// exactly 0 (checks are rare here: reconcileInUse does not mask a drift).
func TestInUseBalancesOnEveryPath(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "10m", "pool_max_conns", "4"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	zero := func(msg string) { t.Helper(); requireInUse(t, m, nil, msg) }
	q := m.Master()

	_, err := q.Exec(ctx, "CREATE TABLE revt (id int primary key)")
	require.NoError(t, err)
	_, err = q.Exec(ctx, "SELEC 1")
	require.Error(t, err)
	zero("Exec")

	rows, err := q.Query(ctx, "SELECT generate_series(1, 3)")
	require.NoError(t, err)
	rows.Next()
	rows.Close()
	rows, err = q.Query(ctx, "SELECT generate_series(1, 3)")
	require.NoError(t, err)
	for rows.Next() {
	}
	rows, err = q.Query(ctx, "SELECT 1/0 FROM generate_series(1, 3)")
	if err == nil {
		for rows.Next() {
		}
		rows.Close()
	}
	_, err = q.Query(ctx, "SELEC")
	require.Error(t, err)
	zero("Query")

	var v int
	require.NoError(t, q.QueryRow(ctx, "SELECT 1").Scan(&v))
	require.ErrorIs(t, q.QueryRow(ctx, "SELECT 1 WHERE false").Scan(&v), pgx.ErrNoRows)
	require.Error(t, q.QueryRow(ctx, "SELEC").Scan(&v))
	zero("QueryRow")

	b := &pgx.Batch{}
	b.Queue("INSERT INTO revt VALUES (1)")
	b.Queue("SELECT 1")
	br := q.SendBatch(ctx, b)
	_, _ = br.Exec()
	require.NoError(t, br.Close())
	b = &pgx.Batch{}
	b.Queue("INSERT INTO revt VALUES (1)") // duplicate
	b.Queue("SELECT 1")
	br = q.SendBatch(ctx, b)
	require.Error(t, br.Close())
	zero("SendBatch")

	_, err = q.CopyFrom(ctx, pgx.Identifier{"revt"}, []string{"id"}, pgx.CopyFromRows([][]any{{2}, {3}}))
	require.NoError(t, err)
	_, err = q.CopyFrom(ctx, pgx.Identifier{"revt"}, []string{"id"}, pgx.CopyFromRows([][]any{{2}}))
	require.Error(t, err)
	_, err = q.CopyFrom(ctx, pgx.Identifier{"nope"}, []string{"id"}, pgx.CopyFromRows([][]any{{2}}))
	require.Error(t, err)
	zero("CopyFrom")

	tx, err := q.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "INSERT INTO revt VALUES (10)")
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	tx, err = q.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "INSERT INTO revt VALUES (10)")
	require.Error(t, err)
	require.Error(t, tx.Commit(ctx))
	tx, err = q.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(ctx))
	rtx, err := m.Replica().Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, rtx.Rollback(ctx))
	tx, err = q.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "INSERT INTO revt VALUES (11)")
	require.NoError(t, err)
	tok, err := hasql.CommitToken(ctx, tx)
	require.NoError(t, err)
	zero("Begin")

	require.NoError(t, m.Replica(hasql.After(tok)).QueryRow(ctx, "SELECT count(*) FROM revt").Scan(&v))
	conn, err := m.AcquireReplica(ctx, hasql.After(tok))
	require.NoError(t, err)
	conn.Release()
	lsn, err := m.CurrentLSN(ctx)
	require.NoError(t, err)
	conn, err = m.AcquireReplica(ctx, hasql.MinLSN(lsn), hasql.MinLSNWait(time.Second), hasql.FallbackToMaster())
	require.NoError(t, err)
	conn.Release()
	require.NoError(t, m.WaitReplayed(ctx, lsn))
	zero("After, MinLSN, WaitReplayed")

	// A statement cut by its context.
	cctx, ccancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = q.Exec(cctx, "SELECT pg_sleep(5)")
	ccancel()
	require.Error(t, err)
	cctx, ccancel = context.WithTimeout(ctx, 100*time.Millisecond)
	rows, err = q.Query(cctx, "SELECT pg_sleep(5)")
	if err == nil {
		for rows.Next() {
		}
		rows.Close()
	}
	ccancel()
	zero("statements cut by their context")

	permanent := errors.New("permanent")
	err = failover.RunInTx(ctx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO revt VALUES (20)")
		if err != nil {
			return err
		}
		return permanent
	})
	require.ErrorIs(t, err, permanent)
	require.NoError(t, failover.RunInTx(ctx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO revt VALUES (20)")
		return err
	}))
	zero("RunInTx")

	db := m.DB(hasql.TargetMaster)
	_, err = db.ExecContext(ctx, "INSERT INTO revt VALUES (30)")
	require.NoError(t, err)
	require.NoError(t, db.Close())
	l, err := m.Listen(ctx, "revch")
	require.NoError(t, err)
	l.Close()
	zero("DB, Listen")
}

// Acquires and releases from many goroutines, no hijack: some acquire is
// always on its way between the count and the pool, which reconcileInUse
// must not take for a hijacked connection. Once all is released the count
// is 0, never below; and an acquire with context.Background() on a full
// pool then still ends within hasql_acquire_timeout.
func TestInUseNotTakenOutUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	n1 := c.Nodes()[0]
	const maxConns = 8
	m := newManager(t, ctx, withParams(c.DSN(), "pool_max_conns", "8", "hasql_check_interval", "5ms",
		"hasql_acquire_timeout", "500ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 0))

	for round := range 4 {
		lctx, lcancel := context.WithTimeout(ctx, 2*time.Second)
		var wg sync.WaitGroup
		for range 3 * maxConns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for lctx.Err() == nil {
					conn, err := m.AcquireMaster(lctx)
					if err != nil {
						continue
					}
					conn.Release()
				}
			}()
		}
		wg.Wait()
		lcancel()
		requireInUse(t, m, nil, fmt.Sprintf("round %d, every connection released", round))
	}

	// Hold the pool's every connection, then acquire with no deadline.
	var held []*pgxpool.Conn
	defer func() {
		for _, conn := range held {
			conn.Release()
		}
	}()
	for range maxConns {
		conn, err := m.AcquireMaster(ctx)
		require.NoError(t, err)
		held = append(held, conn)
	}
	requireInUse(t, m, map[string]int64{n1.Addr(): maxConns}, "the pool's every connection held")
	done := make(chan error, 1)
	go func() {
		conn, err := m.AcquireMaster(context.Background())
		if err == nil {
			conn.Release()
		}
		done <- err
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.DeadlineExceeded, "the bounded wait ends without a connection")
	case <-ctx.Done():
		t.Fatalf("an acquire with context.Background() on a full pool never ended (in use: %v)", hasql.InUse(m))
	}
}
