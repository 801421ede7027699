package hasql_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestAppErrorsDoNotMultiplyChecks: what the application meets on its own
// pooled connections (its statements' contexts ending, 25006 on a replica
// or in a READ ONLY transaction on a healthy master) comes at the rate of
// its statements, and must not ask for checks at their rate: the first has the node checked
// at once, the next wait for the check interval (or a second): the checks
// are bounded by the time the errors took, not by their number. And a
// 25006 on a replica (a stray write) does not throw its connection away:
// no new backend per application error.
func TestAppErrorsDoNotMultiplyChecks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	execOn(t, ctx, n1, "CREATE TABLE churn (id int)")
	const errs = 30

	// checksDuring runs f errs times and returns how many checks node
	// (by port) got meanwhile, with a check interval of ten minutes.
	newM := func(t *testing.T) (*hasql.Manager, *countingChecker) {
		cc := newCountingChecker()
		m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "10m"), hasql.WithChecker(cc))
		require.NoError(t, m.WaitReady(ctx, 1, 1))
		// The first checks after the start may ask for one another's.
		waitUntil(t, ctx, "the replica's lag is known", func() bool { return statusAt(m, n2).LagKnown })
		return m, cc
	}

	t.Run("statements whose context ends", func(t *testing.T) {
		m, cc := newM(t)
		port := portOf(t, n1)
		before, began := cc.counts(port), time.Now()
		for range errs {
			qctx, qcancel := context.WithTimeout(ctx, 20*time.Millisecond)
			_, err := m.Master().Exec(qctx, "SELECT pg_sleep(1)")
			qcancel()
			require.Error(t, err)
		}
		// One more round trip of a check's length: the last request has run.
		_, err := m.Master().Exec(ctx, "SELECT 1")
		require.NoError(t, err)
		got := cc.counts(port) - before
		t.Logf("%d client timeouts on the master: %d checks of it (interval 10m)", errs, got)
		require.LessOrEqual(t, got, errorChecksBound(began), "each client timeout had the master checked: checks grow with the application's timeouts")
	})

	t.Run("25006 on a replica", func(t *testing.T) {
		m, cc := newM(t)
		port := portOf(t, n2)
		before, began := cc.counts(port), time.Now()
		pids := map[uint32]bool{}
		for range errs {
			conn, err := m.AcquireReplica(ctx)
			require.NoError(t, err)
			pids[conn.Conn().PgConn().PID()] = true
			_, err = conn.Exec(ctx, "INSERT INTO churn VALUES (1)")
			conn.Release()
			var pe *pgconn.PgError
			require.True(t, errors.As(err, &pe) && pe.Code == "25006", "%v", err)
		}
		got := cc.counts(port) - before
		t.Logf("%d 25006 errors on the replica: %d checks of it, %d backends", errs, got, len(pids))
		require.LessOrEqual(t, len(pids), 3, "every 25006 on a replica threw its connection away: a new backend per application error")
		require.LessOrEqual(t, got, errorChecksBound(began), "each 25006 had the replica checked")
	})

	t.Run("25006 in a READ ONLY transaction on the master", func(t *testing.T) {
		m, cc := newM(t)
		port := portOf(t, n1)
		before, began := cc.counts(port), time.Now()
		pids := map[uint32]bool{}
		for range errs {
			tx, err := m.Master().BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
			require.NoError(t, err)
			pids[tx.Conn().PgConn().PID()] = true
			_, err = tx.Exec(ctx, "INSERT INTO churn VALUES (1)")
			var pe *pgconn.PgError
			require.True(t, errors.As(err, &pe) && pe.Code == "25006", "%v", err)
			require.NoError(t, tx.Rollback(ctx))
		}
		_, err := m.Master().Exec(ctx, "INSERT INTO churn VALUES (2)")
		require.NoError(t, err)
		got := cc.counts(port) - before
		t.Logf("%d 25006 errors in READ ONLY transactions on the master: %d checks of it, %d backends", errs, got, len(pids))
		require.Equal(t, hasql.RoleMaster, statusAt(m, n1).Role)
		// Its connections are closed on release (25006 on the master does
		// not tell a READ ONLY transaction from a demotion): not asserted.
		require.LessOrEqual(t, got, errorChecksBound(began), "each 25006 had the master checked")
	})
}

// errorChecksBound is how many checks errors met since began may have
// asked for: one at once, then one a second (the check interval is ten
// minutes), and one more for a check already under way.
func errorChecksBound(began time.Time) int {
	return 2 + int(time.Since(began)/time.Second)
}
