package hasql_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// logCapture keeps the messages of the records logged at Warn or above.
type logCapture struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCapture) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	l.msgs = append(l.msgs, b.String())
	return nil
}
func (l *logCapture) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCapture) WithGroup(string) slog.Handler      { return l }

// A healthy cluster under writes: n1 master, n2 its replica, n3 cascading
// from n2 (n1's walsenders do not list it), n3 a little further away (5 ms
// a round trip). A Manager starts: its first checks run together, n1's and
// n2's end first and n1 is master; n3's, begun while n1's ran, ends later
// showing WAL n1 wrote after its position was read. The master must not be
// taken away (no master, its pool reset, a failover reported) for that.
func TestStartupWithACascadeReportsNoFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	conn, err := n3.Conn(ctx)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port="+portStr(n2.DirectAddr())+" user=postgres password=pgxha application_name=n3'")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "SELECT pg_reload_conf()")
	require.NoError(t, err)
	conn.Close(ctx)
	require.Eventually(t, func() bool {
		c2, err := n2.Conn(ctx)
		if err != nil {
			return false
		}
		defer c2.Close(ctx)
		var k int
		return c2.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'n3'").Scan(&k) == nil && k == 1
	}, 30*time.Second, 20*time.Millisecond, "n3 streams from n2")

	w, err := n1.Conn(ctx)
	require.NoError(t, err)
	_, err = w.Exec(ctx, "CREATE TABLE load (v int)")
	require.NoError(t, err)
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			if _, err := w.Exec(ctx, "INSERT INTO load SELECT generate_series(1, 50)"); err != nil {
				return
			}
		}
	}()
	defer func() { stop.Store(true); <-done; w.Close(context.Background()) }()
	require.NoError(t, n3.SetLatency(5*time.Millisecond))
	defer n3.SetLatency(0)

	bad := 0
	for i := range 10 {
		lc := &logCapture{}
		m, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(slog.New(lc)))
		require.NoError(t, err)
		require.NoError(t, m.WaitReady(ctx, 1, 0))
		// Every node checked again since: a master taken away at the end
		// of n3's first check would have come back by now.
		ready := time.Now()
		require.Eventually(t, func() bool {
			for _, st := range m.Nodes() {
				if !st.LastCheck.After(ready) {
					return false
				}
			}
			return true
		}, time.Minute, 10*time.Millisecond)
		m.Close()
		lc.mu.Lock()
		for _, s := range lc.msgs {
			if strings.Contains(s, "new master") || strings.Contains(s, "role changed") && strings.Contains(s, "from=master") {
				bad++
				t.Errorf("start %d: %s", i, s)
			}
		}
		lc.mu.Unlock()
	}
	if bad > 0 {
		t.Errorf("%d role changes of the healthy master in 10 Manager starts", bad)
	}
}
