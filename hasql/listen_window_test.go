//go:build linux

package hasql_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// The master is cut off and a replica promoted: a notification sent on the
// new master before the Listener moves there is never received, so it lies
// in the MissedError's window. The window began when the Listener noticed,
// a check timeout later, and left it out.
func TestListenMissedWindowCoversTheFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_timeout", "3s"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	receive := listenAfterFirst(t, ctx, m)

	require.NoError(t, n1.Partition())
	require.NoError(t, n2.Promote(ctx))
	execOn(t, ctx, n2, "SELECT pg_notify('ev', 'early')")
	sent := time.Now()

	missed, sawEarly := untilMissed(t, receive, "early")
	_, err := m.Master().Exec(ctx, "SELECT pg_notify('ev', 'after')")
	require.NoError(t, err)
	for {
		got, err := receive()
		require.NoError(t, err)
		sawEarly = sawEarly || got.Payload == "early"
		if got.Payload == "after" {
			break
		}
	}
	require.False(t, sawEarly, "a notification sent before the Listener listened on n2")
	require.True(t, missed.Lost.Before(sent), "'early' (sent before %s) was missed outside the window: %v", sent.Format(time.RFC3339Nano), missed)
	require.False(t, missed.Resumed.Before(missed.Lost), "%v", missed)
}

// A replica is promoted while the old master stays up (the Manager cannot
// reach the new one yet); the new master takes a NOTIFY; the old master
// keeps passing its checks; then the old master is stopped. The MissedError's
// window must contain the NOTIFY sent on the new master (never received).
func TestListenMissedWindowNewMasterWhileOldUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, c.DSN())
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	receive := listenAfterFirst(t, ctx, m)

	require.NoError(t, n2.Partition())
	require.NoError(t, n2.Promote(ctx))
	execOn(t, ctx, n2, "SELECT pg_notify('ev', 'early')")
	sent := time.Now()

	// n1 passes two more checks: the second began after 'early'.
	var last time.Time
	for seen := 0; seen < 2; {
		st := statusAt(m, n1)
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
	require.NoError(t, n2.Heal())
	require.NoError(t, n1.Stop())

	missed, sawEarly := untilMissed(t, receive, "early")
	t.Logf("missed: %v", missed)
	require.False(t, sawEarly)
	require.True(t, missed.Lost.Before(sent), "'early' (sent on %s at %s, never received) is outside the window: %v", n2.Addr(), sent.Format(time.RFC3339Nano), missed)
}

// listenAfterFirst starts a Listener on "ev" (closed with the test), has it
// receive a first notification sent on the master, and returns a receive
// that waits a minute at most.
func listenAfterFirst(t *testing.T, ctx context.Context, m *hasql.Manager) func() (*hasql.Notification, error) {
	t.Helper()
	l, err := m.Listen(ctx, "ev")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	receive := func() (*hasql.Notification, error) {
		rctx, rcancel := context.WithTimeout(ctx, time.Minute)
		defer rcancel()
		return l.Receive(rctx)
	}
	_, err = m.Master().Exec(ctx, "SELECT pg_notify('ev', 'before')")
	require.NoError(t, err)
	got, err := receive()
	require.NoError(t, err)
	require.Equal(t, "before", got.Payload)
	return receive
}

// untilMissed receives until the Listener reports a MissedError, which it
// returns, with whether a notification of payload came before it.
func untilMissed(t *testing.T, receive func() (*hasql.Notification, error), payload string) (*hasql.MissedError, bool) {
	t.Helper()
	saw := false
	for {
		got, err := receive()
		if err != nil {
			var missed *hasql.MissedError
			require.True(t, errors.As(err, &missed), "want a MissedError, got %v", err)
			return missed, saw
		}
		saw = saw || got.Payload == payload
	}
}
