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

// The Manager's view still shows the old master, cut off, and its next
// check is not due. A replica repointed to the new master (promoted
// without the token's write) replays the new timeline past the token's
// position. A read after the token, resolved on the old timeline, finds
// no replica whose last check is past the position and asks the replicas
// how far they replayed: a position of the new timeline is not the
// token's. The read must not be served by that replica without the write
// (it was, with no error: the probe compared positions across timelines).
// The same when the replica has lost its walreceiver by then (its new
// upstream stopped or died): its control data shows the old timeline
// until its next restartpoint, and was taken for the one it replays.
func TestAfterProbeComparesTimelines(t *testing.T) {
	for _, tc := range []struct {
		lose string
		kv   []string
	}{
		{"", []string{"hasql_check_interval", "2m"}},
		{"", []string{"hasql_profile", "fleet"}},
		{"receiver stopped", []string{"hasql_check_interval", "2m"}},
		{"new master killed", []string{"hasql_profile", "fleet"}},
	} {
		name := tc.kv[0] + "=" + tc.kv[1]
		if tc.lose != "" {
			name += ", then " + tc.lose
		}
		t.Run(name, func(t *testing.T) { afterProbeOnAnotherTimeline(t, tc.lose, tc.kv...) })
	}
}

func afterProbeOnAnotherTimeline(t *testing.T, lose string, kv ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	// The connection string names n1 and n3: n2, to be promoted, stays
	// out of the probe.
	m := newManager(t, ctx, withParams(c.DSNFor(n1.Addr(), n3.Addr()), append([]string{"hasql_token_wait", "5s"}, kv...)...))
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	execOn(t, ctx, n1, "CREATE TABLE notes (id int PRIMARY KEY, pad text)")
	first, err := m.Token(ctx)
	require.NoError(t, err)
	for _, n := range []*testcluster.Node{n2, n3} {
		replayedOn(t, ctx, n, first.LSN)
	}

	// Neither replica receives what n1 commits now.
	stopReceiver(t, ctx, n2)
	stopReceiver(t, ctx, n3)
	_, tok, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (7, 'lost')")
	require.NoError(t, err, "acknowledged by n1")

	// n1 is cut off; n2 is promoted, n3 follows it.
	require.NoError(t, n1.Partition())
	require.NoError(t, c.Failover(ctx, n2))
	// n2 writes on past the token's position; n3 replays it.
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
	switch lose {
	case "receiver stopped":
		stopReceiver(t, ctx, n3)
	case "new master killed":
		require.NoError(t, n2.Kill())
		waitNoReceiver(t, ctx, n3)
	case "MinLSN", "WaitReplayed":
		// Another read path of the same Manager asks n3 how far it
		// replayed, on the new timeline (see
		// TestAfterIgnoresPositionsOfAnotherTimelineSeenByOtherReads).
		octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
		if lose == "MinLSN" {
			var one int
			err := m.Replica(hasql.MinLSN(n2lsn)).QueryRow(octx, "SELECT 1").Scan(&one)
			t.Logf("read with MinLSN(%s): %v", n2lsn, err)
		} else {
			t.Logf("WaitReplayed(%s): %v", n2lsn, m.WaitReplayed(octx, n2lsn))
		}
		ocancel()
	}

	var found, port int
	var tl int64
	// Without a walreceiver n3 has nothing to show and no master is
	// left to fall back on: the read waits for one until its context
	// ends, which must come with an error, not the read without the write.
	gone := lose == "receiver stopped" || lose == "new master killed"
	wait := 30 * time.Second
	if gone {
		wait = 3 * time.Second
	}
	rctx, rcancel := context.WithTimeout(ctx, wait)
	defer rcancel()
	err = m.Replica(hasql.After(tok)).QueryRow(rctx,
		"SELECT (SELECT count(*) FROM notes WHERE id = 7), coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0), current_setting('port')::int").Scan(&found, &tl, &port)
	t.Logf("read after %s: %d rows on the server at port %d (n3 is %s), streaming timeline %d; %v", tok, found, port, n3.DirectAddr(), tl, err)
	if err == nil {
		require.Equal(t, 1, found, "a read after the token was served without the token's write, and without an error")
	}
	if !gone {
		// n3's check, which the probe asks for, shows timeline 2: the
		// write is reported lost.
		require.ErrorIs(t, err, hasql.ErrWriteLost)
	}
	require.NoError(t, n1.Heal())
}
