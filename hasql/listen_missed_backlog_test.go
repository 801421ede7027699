//go:build linux

package hasql_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A burst of notifications is committed on the master while the
// application reads the Listener slowly (it is busy): the server holds what
// the sockets and the Listener's buffer cannot take yet, in its queue for
// the listening backend. The checks go on and find every node up. Then the
// master crashes and a replica is promoted. Every notification of the
// burst that never arrives was committed before the MissedError's window
// begins: the window says nothing was missed before Lost, and the
// application that re-reads what changed in [Lost, Resumed] loses them
// without being told.
func TestListenMissedWindowCoversTheServersBacklog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, c.DSN())
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	receive := listenAfterFirst(t, ctx, m)

	// One transaction: every notification of the burst is committed at
	// once, before sent.
	const burst = 6000
	sent := notifyBurst(t, ctx, m, burst, 7000, n1, n2)

	require.NoError(t, n1.Kill())
	require.NoError(t, c.Failover(ctx, n2))

	checkMissedWindowCovers(t, receive, burst, sent)
}

// The same with a small burst (1,000 short notifications, a few hundred
// more than the Listener's buffer holds) and a switch of master with the old
// one still up (a promotion the old master survives, as a stale master):
// pgxha cuts the old master's connections, the Listener's among them, before
// the Listener can drain what its socket held. What the socket and the
// server held was committed before the MissedError's window.
func TestListenMissedWindowCoversWhatTheCutDropped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, c.DSN())
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	receive := listenAfterFirst(t, ctx, m)

	const burst = 1000
	sent := notifyBurst(t, ctx, m, burst, 100, n1, n2)

	require.NoError(t, n2.Promote(ctx)) // n1 runs on
	waitRole(t, m, "n2", hasql.RoleMaster)
	checkMissedWindowCovers(t, receive, burst, sent)
}

// notifyBurst commits burst notifications on channel ev in one
// transaction, each "i:" and size bytes, and waits until each of nodes has
// finished two checks after: the second began after the commit. It returns
// a time after the commit.
func notifyBurst(t *testing.T, ctx context.Context, m *hasql.Manager, burst, size int, nodes ...*testcluster.Node) time.Time {
	t.Helper()
	_, err := m.Master().Exec(ctx,
		"SELECT pg_notify('ev', i::text || ':' || repeat('x', $2)) FROM generate_series(1, $1) i", burst, size)
	require.NoError(t, err)
	sent := time.Now()
	for _, n := range nodes {
		var last time.Time
		for seen := 0; seen < 2; {
			st := statusAt(m, n)
			if st.Up && st.LastCheck.After(sent) && st.LastCheck != last {
				last = st.LastCheck
				seen++
			}
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return sent
}

// checkMissedWindowCovers reads the burst notifications notifyBurst sent
// until a MissedError, and checks that the window it gives began before
// sent when any of them never arrived.
func checkMissedWindowCovers(t *testing.T, receive func() (*hasql.Notification, error), burst int, sent time.Time) {
	t.Helper()
	got := 0
	var missed *hasql.MissedError
	for {
		n, err := receive()
		if err != nil {
			require.True(t, errors.As(err, &missed), "want a MissedError, got %v", err)
			break
		}
		if i, _, ok := strings.Cut(n.Payload, ":"); ok {
			_, err := strconv.Atoi(i)
			require.NoError(t, err)
			got++
		}
	}
	t.Logf("received %d of the %d notifications committed before %s; %v", got, burst, sent.Format(time.RFC3339Nano), missed)
	if got == burst {
		t.Skip("every notification arrived: nothing to check")
	}
	require.True(t, missed.Lost.Before(sent),
		"%d notifications committed before %s were never received, and the MissedError's window begins after it: %v",
		burst-got, sent.Format(time.RFC3339Nano), missed)
}
