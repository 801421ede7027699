package hasql_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// readAfter reads row id of table through m with After(tok): whether it
// is there and whether a replica served.
func readAfter(ctx context.Context, m *hasql.Manager, tok hasql.Token, table string, id int) (found int, onReplica bool, err error) {
	err = m.Replica(hasql.After(tok)).QueryRow(ctx,
		"SELECT count(*), pg_is_in_recovery() FROM "+table+" WHERE id = $1", id).Scan(&found, &onReplica)
	return found, onReplica, err
}

// replayedTo waits until every replica in m's view replayed lsn.
func replayedTo(t *testing.T, m *hasql.Manager, lsn hasql.LSN) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, st := range m.Nodes() {
			if st.Role.IsReplica() && st.LSN < lsn {
				return false
			}
		}
		return true
	}, 30*time.Second, 5*time.Millisecond, "replicas never replayed %s: %v", lsn, m.Nodes())
}

// A token taken on one Manager, carried as text to another (another
// process, in a service), makes that one read the write: from the master
// while every replica's replay is paused, from the replicas once they
// replayed it. A token of another cluster is refused, saying so.
func TestTokenAcrossManagers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	dsn := withParams(c.DSN(), "hasql_check_interval", "100ms")
	writer := newManager(t, ctx, dsn)
	reader := newManager(t, ctx, dsn)
	require.NoError(t, writer.WaitReady(ctx, 1, 2))
	require.NoError(t, reader.WaitReady(ctx, 1, 2))

	_, err := writer.Master().Exec(ctx, "CREATE TABLE comments (id int PRIMARY KEY, body text)")
	require.NoError(t, err)
	created, err := writer.Token(ctx)
	require.NoError(t, err)
	replayedTo(t, reader, created.LSN)

	for _, n := range c.Replicas() {
		require.NoError(t, n.PauseReplay(ctx))
	}
	_, err = writer.Master().Exec(ctx, "INSERT INTO comments VALUES (1, 'first')")
	require.NoError(t, err)
	tok, err := writer.Token(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 1, tok.Timeline)
	assert.NotZero(t, tok.SystemID)
	text := tok.String()
	assert.Less(t, len(text), 100)

	carried, err := hasql.ParseToken(text)
	require.NoError(t, err)

	// A transaction's token, read on its connection right after COMMIT.
	tx, err := writer.Master().Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "INSERT INTO comments VALUES (2, 'in a transaction')")
	require.NoError(t, err)
	txTok, err := hasql.CommitToken(ctx, tx)
	require.NoError(t, err)
	assert.Greater(t, txTok.LSN, tok.LSN)
	assert.Equal(t, tok.Timeline, txTok.Timeline)
	found, onReplica, err := readAfter(ctx, reader, txTok, "comments", 2)
	require.NoError(t, err)
	assert.Equal(t, 1, found, "the read after CommitToken's token sees the transaction")
	assert.False(t, onReplica)
	assert.Equal(t, txTok, tok.Merge(txTok))
	var plain int
	require.NoError(t, reader.Replica().QueryRow(ctx, "SELECT count(*) FROM comments WHERE id = 1").Scan(&plain))
	require.Equal(t, 0, plain, "the replicas do not have the write")
	for range 5 {
		found, onReplica, err := readAfter(ctx, reader, carried, "comments", 1)
		require.NoError(t, err)
		assert.Equal(t, 1, found, "the read after the token sees the write")
		assert.False(t, onReplica, "no replica has it: the master served")
	}

	for _, n := range c.Replicas() {
		require.NoError(t, n.ResumeReplay(ctx))
	}
	replayedTo(t, reader, tok.LSN)
	for range 10 {
		found, onReplica, err := readAfter(ctx, reader, carried, "comments", 1)
		require.NoError(t, err)
		assert.Equal(t, 1, found)
		assert.True(t, onReplica, "the replicas replayed it: they serve")
	}

	t.Run("a timeline the cluster never had", func(t *testing.T) {
		ahead := carried
		ahead.Timeline = 5
		_, err := reader.Replica(hasql.After(ahead)).Exec(ctx, "SELECT 1")
		require.ErrorIs(t, err, hasql.ErrTokenAhead)
		assert.Contains(t, err.Error(), "timeline 5")
	})

	t.Run("another cluster", func(t *testing.T) {
		other := testcluster.New(t, testcluster.Options{Replicas: 1})
		m := newManager(t, ctx, withParams(other.DSN(), "hasql_check_interval", "100ms"))
		require.NoError(t, m.WaitReady(ctx, 1, 1))
		_, err := m.Replica(hasql.After(carried)).Exec(ctx, "SELECT 1")
		require.ErrorIs(t, err, hasql.ErrTokenForeign)
		assert.Contains(t, err.Error(), "another cluster")
		var te *hasql.TokenError
		require.ErrorAs(t, err, &te)
		assert.Equal(t, carried, te.Token)
	})
}

// Across a failover: a token whose write the new master has is honoured on
// the new timeline, by a Manager that saw the failover and by one started
// after it; a token whose write was lost (acknowledged on the old master,
// never replicated to the replica promoted) fails with ErrWriteLost instead
// of waiting or reading as if the write were there. A user who may not read
// the timeline history gets ErrForkUnknown.
func TestTokenAcrossFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	dsn := withParams(c.DSN(), "hasql_check_interval", "100ms")
	m := newManager(t, ctx, dsn)
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	execOn(t, ctx, n1, "CREATE TABLE notes (id int PRIMARY KEY)",
		"CREATE ROLE reader LOGIN PASSWORD 'r'", "GRANT SELECT ON notes TO reader")
	_, err := m.Master().Exec(ctx, "INSERT INTO notes VALUES (1)")
	require.NoError(t, err)
	kept, err := m.Token(ctx)
	require.NoError(t, err)
	replayedTo(t, m, kept.LSN)

	stopReceiver(t, ctx, n2) // what n1 commits now, n2 will never have
	_, err = m.Master().Exec(ctx, "INSERT INTO notes VALUES (2)")
	require.NoError(t, err, "acknowledged by n1 alone")
	lost, err := m.Token(ctx)
	require.NoError(t, err)

	require.NoError(t, n1.Kill())
	require.NoError(t, c.Failover(ctx, n2))
	waitRole(t, m, "n2", hasql.RoleMaster)
	require.Eventually(t, func() bool { return statusOf(m, "n2").Timeline == 2 }, 30*time.Second, 5*time.Millisecond)
	var present int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM notes WHERE id = 2").Scan(&present))
	require.Equal(t, 0, present, "the write of the lost token is not on the new master")

	after := newManager(t, ctx, dsn) // a process started after the failover
	require.NoError(t, after.WaitReady(ctx, 1, 0))
	for name, mm := range map[string]*hasql.Manager{"saw the failover": m, "started after it": after} {
		t.Run(name, func(t *testing.T) {
			found, _, err := readAfter(ctx, mm, kept, "notes", 1)
			require.NoError(t, err, "the write before the fork is in the new timeline's history")
			assert.Equal(t, 1, found)

			short, cancelShort := context.WithTimeout(ctx, 10*time.Second)
			defer cancelShort()
			_, _, err = readAfter(short, mm, lost, "notes", 2)
			require.ErrorIs(t, err, hasql.ErrWriteLost)
			assert.NoError(t, short.Err(), "reported at once, not waited for")
			assert.Contains(t, err.Error(), "timeline 1 ended at")
			assert.Contains(t, err.Error(), lost.String())
		})
	}

	_, err = m.Master().Exec(ctx, "INSERT INTO notes VALUES (3)")
	require.NoError(t, err)
	newer, err := m.Token(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 2, newer.Timeline)
	assert.Equal(t, kept.SystemID, newer.SystemID)
	assert.Equal(t, newer, kept.Merge(newer))
	found, _, err := readAfter(ctx, after, newer, "notes", 3)
	require.NoError(t, err)
	assert.Equal(t, 1, found)

	t.Run("no right to read the history", func(t *testing.T) {
		restricted := newManager(t, ctx, withParams(strings.Replace(c.DSN(), "postgres:pgxha@", "reader:r@", 1), "hasql_check_interval", "100ms"))
		require.NoError(t, restricted.WaitReady(ctx, 1, 0))
		_, _, err := readAfter(ctx, restricted, kept, "notes", 1)
		require.ErrorIs(t, err, hasql.ErrForkUnknown)
		assert.Contains(t, err.Error(), "00000002.history")
		assert.Contains(t, err.Error(), "permission denied")
		found, _, err := readAfter(ctx, restricted, newer, "notes", 3)
		require.NoError(t, err, "a token of the cluster's timeline needs no history")
		assert.Equal(t, 1, found)
	})
}

// Under a write load, the master is killed and an async replica promoted:
// for every acknowledged write, a read after its token (on a Manager
// started after the failover) either sees the row or fails with
// ErrWriteLost, and ErrWriteLost only for rows the new master does not
// have. No read after a token misses its write silently.
func TestTokenNeverSilentlyMissing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	dsn := withParams(c.DSN(), "hasql_check_interval", "100ms")
	m := newManager(t, ctx, dsn)
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	_, err := m.Master().Exec(ctx, "CREATE TABLE acked (id int PRIMARY KEY)")
	require.NoError(t, err)

	type write struct {
		id  int
		tok hasql.Token
	}
	var acked []write
	done := make(chan struct{})
	go func() {
		defer close(done)
		for id := 1; id <= 100000 && ctx.Err() == nil; id++ {
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := m.Master().Exec(wctx, "INSERT INTO acked VALUES ($1)", id)
			var tok hasql.Token
			if err == nil {
				tok, err = m.Token(wctx)
			}
			cancel()
			if err != nil {
				return // the master is gone
			}
			acked = append(acked, write{id, tok})
		}
	}()
	require.Eventually(t, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		var n int
		return m.Replica().QueryRow(ctx, "SELECT count(*) FROM acked").Scan(&n) == nil && n >= 50
	}, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, n1.Kill())
	<-done
	require.NotEmpty(t, acked)
	require.NoError(t, c.Failover(ctx, n2))

	after := newManager(t, ctx, dsn)
	require.NoError(t, after.WaitReady(ctx, 1, 0))
	require.Eventually(t, func() bool { return statusOf(after, "n2").Role == hasql.RoleMaster }, 30*time.Second, 5*time.Millisecond)
	present := map[int]bool{}
	rows, err := after.Master().Query(ctx, "SELECT id FROM acked")
	require.NoError(t, err)
	for rows.Next() {
		var id int
		require.NoError(t, rows.Scan(&id))
		present[id] = true
	}
	require.NoError(t, rows.Err())

	var seen, reportedLost int
	for _, w := range acked {
		found, _, err := readAfter(ctx, after, w.tok, "acked", w.id)
		switch {
		case err == nil:
			require.Equal(t, 1, found, "write %d (token %s): read after its token without error, the row must be there", w.id, w.tok)
			seen++
		case errors.Is(err, hasql.ErrWriteLost):
			require.False(t, present[w.id], "write %d is on the new master but was reported lost: %v", w.id, err)
			reportedLost++
		default:
			require.NoError(t, err, "write %d", w.id)
		}
	}
	lost := 0
	for _, w := range acked {
		if !present[w.id] {
			lost++
		}
	}
	assert.Equal(t, lost, reportedLost, "every write missing on the new master is reported lost")
	t.Logf("%d acknowledged writes: %d read after their token, %d reported lost (%d missing on the new master)", len(acked), seen, reportedLost, lost)
}
