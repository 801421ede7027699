//go:build linux

package hasql_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A rogue master whose check answer carries a 3 MiB walsender row (under
// the check connection's 4 MiB bound, after authentication): the checker's
// error quotes the row: it is cut at 8 KiB in NodeStatus.LastError and in
// the logs.
func TestCheckErrorQuotingAHugeValueIsBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	huge := strings.Repeat("X", 3<<20)
	q := newQueryPG(t, masterAnswers(7000000000000000099, func() string { return huge },
		func(be *pgproto3.Backend) {
			sendRow(be, []uint32{oidInt4, oidText, oidText}, []any{1, "x", "127.0.0.1"})
		}))
	addr := q.Addr()
	var maxRecord atomic.Int64
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		if int64(len(p)) > maxRecord.Load() {
			maxRecord.Store(int64(len(p)))
		}
		return len(p), nil
	}), nil))
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@%s/app?sslmode=disable&hasql_check_interval=100ms", addr))
	require.NoError(t, err)
	cfg.Logger = logger
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	var lastErr string
	waitUntil(t, ctx, "the node's error", func() bool {
		for _, st := range m.Nodes() {
			if st.Addr == addr && st.LastError != nil {
				lastErr = st.LastError.Error()
				return true
			}
		}
		return false
	})
	t.Logf("node error %d bytes (%.100s...), largest log record %d bytes", len(lastErr), lastErr, maxRecord.Load())
	assert.Less(t, len(lastErr), 64<<10, "the server's value is the node's error")
	assert.Less(t, maxRecord.Load(), int64(64<<10), "the server's value is a log line")
}

// A pool connection's own AfterConnect / ValidateConnect (pgconn's, set by
// ConfigureNode) runs once the server has authenticated; security.md says
// a pool connection then reads up to pgx's bound: a 1 MiB row failed the
// connect under the bound of a connection being made.
func TestAfterConnectReadsALargeRow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	var ran atomic.Int64
	m := newManager(t, ctx, c.DSN(), hasql.WithConfigureNode(func(n hasql.NodeConfig, pc *pgxpool.Config) error {
		pc.ConnConfig.AfterConnect = func(ctx context.Context, pc *pgconn.PgConn) error {
			ran.Add(1)
			_, err := pc.Exec(ctx, "SELECT repeat('x', 1 << 20)").ReadAll()
			return err
		}
		return nil
	}))
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	actx, acancel := context.WithTimeout(ctx, 10*time.Second)
	defer acancel()
	conn, err := m.AcquireMaster(actx)
	if conn != nil {
		conn.Release()
	}
	require.NoError(t, err, "AfterConnect ran %d times", ran.Load())
}
