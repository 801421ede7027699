package hasql_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// As in TestAfterProbeComparesTimelines: the Manager's view still shows
// the old master n1, cut off, its next check not due; n2 was promoted
// without the token's write and n3, repointed to it, replays the new
// timeline past the token's position. Before the read after the token,
// the same Manager learned n3's position some other way: a read with a
// plain MinLSN, or WaitReplayed, asked n3 how far it replayed. That
// position is of another timeline than the one the token was resolved
// against: a read after the token must still not be served by n3
// without the write.
func TestAfterIgnoresPositionsOfAnotherTimelineSeenByOtherReads(t *testing.T) {
	for _, how := range []string{"MinLSN", "WaitReplayed"} {
		t.Run(how, func(t *testing.T) { afterAfterPositionSeenElsewhere(t, how) })
	}
}

func afterAfterPositionSeenElsewhere(t *testing.T, how string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	m := newManager(t, ctx, withParams(c.DSNFor(n1.Addr(), n3.Addr()), "hasql_token_wait", "5s", "hasql_check_interval", "2m"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	execOn(t, ctx, n1, "CREATE TABLE notes (id int PRIMARY KEY, pad text)")
	first, err := m.Token(ctx)
	require.NoError(t, err)
	for _, n := range []*testcluster.Node{n2, n3} {
		replayedOn(t, ctx, n, first.LSN)
	}

	stopReceiver(t, ctx, n2)
	stopReceiver(t, ctx, n3)
	_, tok, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (7, 'lost')")
	require.NoError(t, err, "acknowledged by n1")

	require.NoError(t, n1.Partition())
	require.NoError(t, c.Failover(ctx, n2))
	var n2lsn hasql.LSN
	for i := 0; i < 100 && n2lsn == 0; i++ {
		from := strconv.Itoa(1000 + 1000*i)
		execOn(t, ctx, n2, "INSERT INTO notes SELECT g, repeat('x', 100) FROM generate_series("+from+", "+from+" + 999) g")
		conn, err := n2.Conn(ctx)
		require.NoError(t, err)
		var past bool
		var s string
		require.NoError(t, conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn() > $1::pg_lsn, pg_current_wal_insert_lsn()::text", tok.LSN.String()).Scan(&past, &s))
		conn.Close(ctx)
		if past {
			n2lsn, err = hasql.ParseLSN(s)
			require.NoError(t, err)
		}
	}
	require.NotZero(t, n2lsn, "n2 never wrote past the token's position")
	replayedOn(t, ctx, n3, n2lsn)

	// Another read path of the same Manager asks n3 how far it replayed.
	octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
	switch how {
	case "MinLSN":
		var one int
		err := m.Replica(hasql.MinLSN(n2lsn)).QueryRow(octx, "SELECT 1").Scan(&one)
		t.Logf("read with MinLSN(%s): %v", n2lsn, err)
	case "WaitReplayed":
		t.Logf("WaitReplayed(%s): %v", n2lsn, m.WaitReplayed(octx, n2lsn))
	}
	ocancel()

	var found, port int
	var tl int64
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	err = m.Replica(hasql.After(tok)).QueryRow(rctx,
		"SELECT (SELECT count(*) FROM notes WHERE id = 7), coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0), current_setting('port')::int").Scan(&found, &tl, &port)
	t.Logf("read after %s: %d rows on the server at port %d (n3 is %s), streaming timeline %d; %v", tok, found, port, n3.DirectAddr(), tl, err)
	if err == nil {
		require.Equal(t, 1, found, "a read after the token was served without the token's write, and without an error")
	}
	require.ErrorIs(t, err, hasql.ErrWriteLost)
	require.NoError(t, n1.Heal())
}
