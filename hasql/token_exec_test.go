//go:build linux

package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A token from ExecToken names the server that ran the write: after a
// failover that lost the write (a replica that never received it is
// promoted), a read after the token fails with ErrWriteLost, where a token
// read afterwards with m.Token names the new master and reads nothing of
// the loss. Both tokens on one read ask for both writes.
func TestExecTokenReportsAWriteLostInAFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	execOn(t, ctx, n1, "CREATE TABLE notes (id int PRIMARY KEY)")
	first, err := m.Token(ctx)
	require.NoError(t, err)
	replayedTo(t, m, first.LSN)

	_, _, err = m.Replica().ExecToken(ctx, "INSERT INTO notes VALUES (0)")
	require.Error(t, err, "a token names a write: replicas have none")

	stopReceiver(t, ctx, n2) // what n1 commits now, n2 never has

	tag, tok, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (7)")
	require.NoError(t, err, "acknowledged by n1")
	assert.EqualValues(t, 1, tag.RowsAffected())
	assert.Equal(t, first.Timeline, tok.Timeline)
	assert.Greater(t, tok.LSN, first.LSN)

	require.NoError(t, n1.Kill())
	require.NoError(t, c.Failover(ctx, n2))
	waitRole(t, m, "n2", hasql.RoleMaster)

	var present int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM notes WHERE id = 7").Scan(&present))
	require.Equal(t, 0, present, "the acknowledged write is not on the new master")

	_, _, err = readAfter(ctx, m, tok, "notes", 7)
	require.ErrorIs(t, err, hasql.ErrWriteLost, "a read after the write's token")

	// What the documentation warns of: a token read now names n2.
	later, err := m.Token(ctx)
	require.NoError(t, err)
	assert.Greater(t, later.Timeline, tok.Timeline, "m.Token names the master of now")

	// Both tokens on one read ask for both writes. Merged into the later
	// one, the lost write read as present (0 rows, no error), and a
	// token of another cluster was refused or not by the options' order.
	t.Run("several After options", func(t *testing.T) {
		_, after, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (8)")
		require.NoError(t, err)
		foreign := after
		foreign.SystemID ^= 1
		for _, tc := range []struct {
			a, b  hasql.Token
			id    int
			want  error
			found int
		}{
			{tok, after, 7, hasql.ErrWriteLost, 0},
			{after, tok, 7, hasql.ErrWriteLost, 0},
			{foreign, after, 8, hasql.ErrTokenForeign, 0},
			{after, foreign, 8, hasql.ErrTokenForeign, 0},
			{later, after, 8, nil, 1},
		} {
			var found int
			err := m.Replica(hasql.After(tc.a), hasql.After(tc.b)).QueryRow(ctx, "SELECT count(*) FROM notes WHERE id = $1", tc.id).Scan(&found)
			t.Logf("After(%s), After(%s): %d rows, %v", tc.a, tc.b, found, err)
			if tc.want == nil {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, tc.want)
			}
			assert.Equal(t, tc.found, found)
		}
	})
}

// With no master, a read after a token goes on asking the replicas past
// its token wait: a replica that replays the write later (its replay was
// paused) serves it, instead of the read waiting for a master that does not
// come back.
func TestAfterWithoutMasterKeepsAskingReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "hasql_token_wait", "10ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	execOn(t, ctx, n1, "CREATE TABLE notes (id int PRIMARY KEY)")
	first, err := m.Token(ctx)
	require.NoError(t, err)
	replayedTo(t, m, first.LSN)

	require.NoError(t, n2.PauseReplay(ctx))
	_, tok, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (7)")
	require.NoError(t, err)
	conn, err := n1.Conn(ctx)
	require.NoError(t, err)
	var flushed string
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&flushed))
	conn.Close(ctx)
	require.Eventually(t, func() bool {
		conn, err := n2.Conn(ctx)
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		var ok bool
		return conn.QueryRow(ctx, "SELECT pg_last_wal_receive_lsn() >= $1::pg_lsn", flushed).Scan(&ok) == nil && ok
	}, 30*time.Second, 10*time.Millisecond, "n2 never received the write")

	require.NoError(t, n1.Kill())
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, 30*time.Second, 5*time.Millisecond, "n1 still master: %v", m.Nodes())

	type result struct {
		found int
		err   error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		rctx, rcancel := context.WithTimeout(ctx, time.Minute)
		defer rcancel()
		found, _, err := readAfter(rctx, m, tok, "notes", 7)
		done <- result{found, err}
	}()
	// Past the token wait (10ms) many times over, the read still asks n2.
	require.Eventually(t, func() bool { return probedOn(ctx, n2) && time.Since(start) > time.Second },
		30*time.Second, 10*time.Millisecond, "the read never asked n2")
	require.NoError(t, n2.ResumeReplay(ctx))
	r := <-done
	require.NoError(t, r.err, "n2 has the write and serves reads")
	assert.Equal(t, 1, r.found)
}

// ExecToken of a statement that leaves a transaction open gives an error
// and no token, and what it wrote in that transaction is rolled back.
func TestExecTokenRefusesAnOpenTransaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	m := newManager(t, ctx, c.DSN())
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	_, err := m.Master().Exec(ctx, "CREATE TABLE notes (id int PRIMARY KEY)")
	require.NoError(t, err)

	_, tok, err := m.Master().ExecToken(ctx, "BEGIN; INSERT INTO notes VALUES (1)")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "transaction open")
	assert.True(t, tok.IsZero())
	var k int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&k))
	assert.Zero(t, k, "the open transaction's write is rolled back")

	_, tok, err = m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (2)")
	require.NoError(t, err)
	assert.False(t, tok.IsZero())

	// A string whose first statement runs in autocommit before its BEGIN
	// (the simple protocol takes several statements): that one commits,
	// and the error must not say that nothing did (a caller who believed
	// it would write again).
	_, tok, err = m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (3); COMMIT; BEGIN; INSERT INTO notes VALUES (4)")
	require.Error(t, err)
	assert.True(t, tok.IsZero())
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM notes WHERE id IN (3, 4)").Scan(&k))
	require.Equal(t, 1, k, "row 3 committed in autocommit, row 4 rolled back")
	assert.NotContains(t, err.Error(), "nothing it wrote is committed")
	assert.Contains(t, err.Error(), "before its BEGIN")
}
