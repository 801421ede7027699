//go:build linux

package hasql_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// The replica n2 passes its checks, but refuses every connection of its
// pool (a startup parameter it does not know: FATAL 42704; a stand-in for
// any refusal of the pool's connects, such as 53300). docs/errors.md: NoNodeError.Last is "the last error met on
// a node's pool while the acquire waited, e.g. a refused connection;
// unwrapped, so errors.As(err, &pgconnErr) finds it". A plain replica read
// keeps the refusal; a read with MinLSN, whose probes of the replicas meet
// the same refusal, ended with a NoNodeError without it.
func TestMinLSNReadKeepsTheRefusal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1, SyncReplicas: 0})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	conn, err := n1.Conn(ctx)
	require.NoError(t, err)
	var pos string
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&pos))
	conn.Close(ctx)
	lsn, err := hasql.ParseLSN(pos)
	require.NoError(t, err)
	replayedOn(t, ctx, n2, lsn)

	cfg, err := hasql.ParseConfig(withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, err)
	cfg.Logger = quiet
	var dials atomic.Int64
	cfg.ConfigureNode = func(n hasql.NodeConfig, pc *pgxpool.Config) error {
		if n.Addr == n2.Addr() {
			// the server refuses the pool's startup packet (FATAL 42704);
			// the check connection sends its own parameters and passes
			pc.ConnConfig.RuntimeParams["no_such_setting"] = "on"
			prev := pc.BeforeConnect
			pc.BeforeConnect = func(ctx context.Context, cc *pgx.ConnConfig) error {
				dials.Add(1) // a connect of n2's pool
				if prev != nil {
					return prev(ctx, cc)
				}
				return nil
			}
		}
		return nil
	}
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	refusal := func(err error) bool {
		var pe *pgconn.PgError
		return errors.As(err, &pe) && pe.Code == "42704"
	}
	// control: a plain read meets the refusal and says so
	actx, acancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = m.AcquireReplica(actx)
	acancel()
	require.Error(t, err)
	t.Logf("plain read: %.400s", err)
	require.True(t, refusal(err), "control: %v", err)

	// a read after a position no replica has yet: it asks n2, which refuses
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	dials.Store(0)
	actx, acancel = context.WithTimeout(ctx, 2*time.Second)
	_, err = m.AcquireReplica(actx, hasql.MinLSN(lsn+1<<30))
	acancel()
	require.Error(t, err)
	t.Logf("MinLSN read: %.600s", err)
	t.Logf("connects of n2's pool during the MinLSN read (each refused): %d", dials.Load())
	require.NotZero(t, dials.Load(), "the MinLSN read never asked n2")
	var ne *hasql.NoNodeError
	require.True(t, errors.As(err, &ne), "%v", err)
	require.True(t, refusal(err), "the MinLSN read met n2's refusal on every probe, and its NoNodeError lost it: Last=%v", ne.Last)
}
