package hasql_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// stopReceiver stops n's walreceiver for good (an empty primary_conninfo), and
// waits until it is gone.
func stopReceiver(t *testing.T, ctx context.Context, n *testcluster.Node) {
	t.Helper()
	execOn(t, ctx, n, "ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()")
	waitNoReceiver(t, ctx, n)
}

// waitNoReceiver waits until n runs no walreceiver and its startup
// process waits out wal_retrieve_retry_interval (its primary_conninfo
// emptied, or its upstream gone). A walreceiver still connecting is not in
// pg_stat_wal_receiver, and one the startup process asked for before it
// read an emptied setting may connect after that view was empty.
func waitNoReceiver(t *testing.T, ctx context.Context, n *testcluster.Node) {
	t.Helper()
	require.Eventually(t, func() bool {
		conn, err := n.Conn(ctx)
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		var ok bool
		return conn.QueryRow(ctx, `SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'walreceiver')
			AND EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'startup' AND wait_event = 'RecoveryRetrieveRetryInterval')`).Scan(&ok) == nil && ok
	}, 30*time.Second, 10*time.Millisecond, "%s's walreceiver never stopped", n)
}

// probedOn reports whether a read after a token asks n how far it
// replayed now (a statement of pgxha's, not a check's).
func probedOn(ctx context.Context, n *testcluster.Node) bool {
	conn, err := n.Conn(ctx)
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	var k int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE application_name <> 'pgxha-check' AND query LIKE '%coalesce(pg_last_wal_replay_lsn()%'
		AND pid <> pg_backend_pid()`).Scan(&k)
	return err == nil && k > 0
}

// TestAfterAcrossFailover: the master is cut off (its fault proxy drops
// everything: the replica's stream too, which the replica notices only
// after wal_receiver_timeout, so it stays a replica meanwhile). A write
// lands on the master alone, through its own address. A read after its
// token begins: the replica, on the token's timeline, has not replayed it,
// so the read asks it and waits. The replica is then promoted, on a
// timeline that forked before the write: the read must fail with
// ErrWriteLost, not be served by the new master as if the write were
// there.
func TestAfterAcrossFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	_, err := m.Master().Exec(ctx, "CREATE TABLE notes (id int PRIMARY KEY)")
	require.NoError(t, err)
	created, err := m.Token(ctx)
	require.NoError(t, err)
	replayedTo(t, m, created.LSN)

	require.NoError(t, n1.Partition())
	direct, err := pgx.Connect(ctx, n1.DirectDSN())
	require.NoError(t, err)
	defer direct.Close(ctx)
	_, err = direct.Exec(ctx, "INSERT INTO notes VALUES (2)")
	require.NoError(t, err, "acknowledged by n1 alone")
	var lsn int64
	require.NoError(t, direct.QueryRow(ctx, "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8").Scan(&lsn))
	tok := hasql.Token{LSN: hasql.LSN(lsn), Timeline: created.Timeline, SystemID: created.SystemID}
	require.Eventually(t, func() bool { return statusOf(m, "n1").Role != hasql.RoleMaster }, 30*time.Second, 5*time.Millisecond)
	require.True(t, statusOf(m, "n2").Role.IsReplica(), "n2 still streams, as far as it knows: %s", statusOf(m, "n2").Role)

	type result struct {
		found int
		err   error
	}
	done := make(chan result, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		found, _, err := readAfter(rctx, m, tok, "notes", 2)
		done <- result{found, err}
	}()
	// The read resolved its token on timeline 1 and asked n2 how far it
	// replayed: it waits.
	require.Eventually(t, func() bool { return probedOn(ctx, n2) }, 30*time.Second, 5*time.Millisecond, "the read never asked n2")
	select {
	case r := <-done:
		t.Fatalf("the read ended before the promotion: %+v", r)
	default:
	}

	require.NoError(t, n1.Kill())
	require.NoError(t, n2.Promote(ctx))
	waitRole(t, m, "n2", hasql.RoleMaster)
	var present int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM notes WHERE id = 2").Scan(&present))
	require.Equal(t, 0, present, "the write is on the new master: it was not lost")

	r := <-done
	t.Logf("read after %s begun between masters: found=%d err=%v", tok, r.found, r.err)
	require.ErrorIs(t, r.err, hasql.ErrWriteLost, "the read that waited through the failover (found %d)", r.found)
}

// conninfoOf returns n's primary_conninfo.
func conninfoOf(t *testing.T, ctx context.Context, n *testcluster.Node) string {
	t.Helper()
	conn, err := n.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var ci string
	require.NoError(t, conn.QueryRow(ctx, "SHOW primary_conninfo").Scan(&ci))
	return ci
}

// streamFrom points n's walreceiver at to with a reload, as Patroni
// repoints a replica: ci is a primary_conninfo that named from.
func streamFrom(t *testing.T, ctx context.Context, n *testcluster.Node, ci string, from, to *testcluster.Node) {
	t.Helper()
	ci2 := strings.Replace(ci, "port="+portStr(from.Addr()), "port="+portStr(to.Addr()), 1)
	require.NotEqual(t, ci, ci2, "%s's primary_conninfo names %s", n, from)
	setConninfo(t, ctx, n, ci2)
}

// setConninfo sets n's primary_conninfo to ci and reloads.
func setConninfo(t *testing.T, ctx context.Context, n *testcluster.Node, ci string) {
	t.Helper()
	execOn(t, ctx, n, "ALTER SYSTEM SET primary_conninfo = '"+strings.ReplaceAll(ci, "'", "''")+"'", "SELECT pg_reload_conf()")
}

// createNotes makes the notes table, and a role reader that may read it
// (without pg_monitor), on master, and waits until m's replicas replayed
// both.
func createNotes(t *testing.T, ctx context.Context, m *hasql.Manager, master *testcluster.Node) {
	t.Helper()
	execOn(t, ctx, master, "CREATE TABLE notes (id int PRIMARY KEY)",
		"CREATE ROLE reader LOGIN PASSWORD 'r'", "GRANT SELECT ON notes TO reader")
	tok, err := m.Token(ctx)
	require.NoError(t, err)
	replayedTo(t, m, tok.LSN)
}

// readerManager returns a Manager of c that checks and reads as reader
// (see createNotes), once it sees a master and replicas replicas.
func readerManager(t *testing.T, ctx context.Context, c *testcluster.Cluster, replicas int) *hasql.Manager {
	t.Helper()
	rm := newManager(t, ctx, withParams(strings.Replace(c.DSN(), "postgres:pgxha@", "reader:r@", 1), "hasql_check_interval", "100ms"))
	require.NoError(t, rm.WaitReady(ctx, 1, replicas))
	return rm
}
