package failover_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// addrOf is "host:port" of a connection, as testcluster names nodes.
func addrOf(conn *pgx.Conn) string {
	cfg := conn.Config()
	return fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)
}

// testLogger sends the manager's log to the test's log while the test runs,
// each line with its time since the logger was made.
func testLogger(t *testing.T) *slog.Logger {
	h := &tlogHandler{t: t, mu: &sync.Mutex{}, begin: time.Now()}
	t.Cleanup(func() {
		h.mu.Lock()
		h.done = true
		h.mu.Unlock()
	})
	return slog.New(h)
}

type tlogHandler struct {
	t     *testing.T
	mu    *sync.Mutex
	done  bool
	attrs []slog.Attr
	begin time.Time
}

func (h *tlogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *tlogHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("+" + r.Time.Sub(h.begin).Round(time.Millisecond).String() + " " + r.Level.String() + " " + r.Message)
	for _, a := range h.attrs {
		b.WriteString(" " + a.String())
	}
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.done {
		h.t.Log(b.String())
	}
	return nil
}

func (h *tlogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &c
}

func (h *tlogHandler) WithGroup(string) slog.Handler { return h }

// noteCounter returns a count, on the master, of table's rows whose note
// column holds a given note.
func noteCounter(t *testing.T, ctx context.Context, m *hasql.Manager, table string) func(note string) int {
	return func(note string) int {
		var k int
		require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE note = $1", note).Scan(&k))
		return k
	}
}

// readyManager returns a Manager of c (logging to the test's log, closed
// when the test ends) once it sees a master and replicas replicas, after
// it ran each of setup on the master.
func readyManager(t *testing.T, ctx context.Context, c *testcluster.Cluster, replicas int, setup ...string) *hasql.Manager {
	t.Helper()
	m, err := hasql.New(ctx, c.DSN(), hasql.WithLogger(testLogger(t)))
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, replicas))
	for _, sql := range setup {
		_, err := m.Master().Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	return m
}
