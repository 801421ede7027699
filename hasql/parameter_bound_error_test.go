package hasql_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
)

// TestCheckErrorNamesTheParameterBound: a rogue that reports new
// parameters with every check trips the check connection's bound; the
// node's error names the bound and holds no password. (The check took the
// closed connection for one the server had ended and retried on a new one,
// whose count began again: the node stayed master, with no error.)
func TestCheckErrorNamesTheParameterBound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var round atomic.Int64
	rogue := newQueryPG(t, func(be *pgproto3.Backend, sql string) bool {
		switch {
		case strings.Contains(sql, "pg_control_system()), pg_postmaster_start_time()"):
			sendServer(be, 7000000000000000009, "rogue")
		case strings.Contains(sql, "string_agg"), strings.Contains(sql, "synchronous_standby_names"):
			r := round.Add(1)
			for i := range 64 {
				be.Send(&pgproto3.ParameterStatus{Name: fmt.Sprintf("p%d_%d", r, i), Value: "hunter2secret"})
			}
			sendMasterCheck(be)
		default:
			sendRow(be, []uint32{oidInt4}, []any{1})
		}
		return true
	})
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:hunter2secret@127.0.0.1:%d/app?sslmode=disable&hasql_check_interval=50ms", closedPort(t)))
	require.NoError(t, err)
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cfg.Discoverer = newSetDiscoverer(discovery.Node{Addr: rogue.Addr()})
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	var last error
	defer func() { t.Logf("rounds %d, nodes %+v", round.Load(), m.Nodes()) }()
	waitUntil(t, ctx, "the rogue's node has an error", func() bool {
		for _, st := range m.Nodes() {
			if st.Addr == rogue.Addr() && st.LastError != nil {
				last = st.LastError
				return true
			}
			if strings.Contains(logs.String(), "more than 256 parameters") {
				last = fmt.Errorf("logged: %s", logs.String())
				return true
			}
		}
		return false
	})
	t.Logf("node error: %v", last)
	require.Contains(t, last.Error(), "more than 256 parameters")
	require.NotContains(t, logs.String(), "hunter2secret")
	require.NotContains(t, fmt.Sprintf("%+v", last), "hunter2secret")
}
