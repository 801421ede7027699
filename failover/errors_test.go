package failover_test

import (
	"context"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestRunInTxDeadSessions: RunInTx and the routed Querier agree on what
// may run again. A session the server ended while idle (57P05), or under
// BEGIN, began nothing: RunInTx runs the function; a master lost under the
// function's statement is a *hasql.NodeLostError, and the transaction runs
// again on the next master, once.
func TestRunInTxDeadSessions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]

	t.Run("57P05 is what the retry rules accept", func(t *testing.T) {
		// A real 57P05 from the server, on a plain connection.
		cfg, err := pgx.ParseConfig(n1.DSN())
		require.NoError(t, err)
		cfg.RuntimeParams["idle_session_timeout"] = "100"
		conn, err := pgx.ConnectConfig(ctx, cfg)
		require.NoError(t, err)
		defer conn.Close(ctx)
		var pid int
		require.NoError(t, conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid))
		waitNoSessions(t, ctx, n1, "pid = "+strconv.Itoa(pid))
		_, err = conn.Exec(ctx, "BEGIN")
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		assert.Equal(t, "57P05", pgErr.Code)
		assert.Equal(t, failover.SafeToRetry, failover.Classify(err))
		assert.True(t, hasql.NeverRan(err))
		require.Error(t, err)
		t.Logf("a session ended while idle: %v", err)
		assert.True(t, hasql.SessionEnded(err))
		c := failover.Classify(err)
		assert.True(t, c.Retryable(), "class %s", c)
	})

	m, err := hasql.New(ctx, withParams(c.DSN(), "idle_session_timeout", "400"), hasql.WithLogger(testLogger(t)))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	_, err = m.Master().Exec(ctx, "CREATE TABLE IF NOT EXISTS lost (id int PRIMARY KEY)")
	require.NoError(t, err)

	t.Run("after idle_session_timeout the function runs, once", func(t *testing.T) {
		for i := range 2 {
			// Until the pooled sessions timed out on the server.
			waitNoSessions(t, ctx, n1, `application_name = '' AND usename = current_user`)
			runs := 0
			err := failover.RunInTx(ctx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
				runs++
				_, err := tx.Exec(ctx, "INSERT INTO lost VALUES ($1)", 100+i)
				return err
			})
			require.NoError(t, err)
			assert.Equal(t, 1, runs)
		}
	})

	t.Run("a master killed under the function", func(t *testing.T) {
		var mu sync.Mutex
		var retryErrs []error
		runs := 0
		var committedOn string
		started := make(chan struct{}, 4)
		failedOver := make(chan struct{})
		defer func() { <-failedOver }()
		go func() {
			defer close(failedOver)
			<-started
			// Until the statement runs on the master, then kill it and
			// promote n2.
			waitSession(t, ctx, n1, `query LIKE 'SELECT pg_sleep%' AND state = 'active'`)
			assert.NoError(t, n1.Kill())
			assert.NoError(t, c.Failover(ctx, n2))
		}()
		err := failover.RunInTx(ctx, m, failover.Options{
			MaxAttempts: 100,
			OnRetry: func(attempt int, err error, class failover.Class, wait time.Duration) {
				mu.Lock()
				retryErrs = append(retryErrs, err)
				mu.Unlock()
			},
		}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if runs == 1 {
				started <- struct{}{}
				_, err := tx.Exec(ctx, "SELECT pg_sleep(60)")
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO lost VALUES (1)")
			if err == nil {
				committedOn = addrOf(tx.Conn())
			}
			return err
		})
		require.NoError(t, err)
		mu.Lock()
		defer mu.Unlock()
		require.NotEmpty(t, retryErrs)
		first := retryErrs[0]
		t.Logf("the first attempt: %v", first)
		require.ErrorIs(t, first, hasql.ErrNodeLost)
		var le *hasql.NodeLostError
		require.ErrorAs(t, first, &le)
		assert.Equal(t, n1.Addr(), le.Addr)
		assert.Equal(t, hasql.RoleMaster, le.Role)
		assert.True(t, le.MayHaveRun)
		assert.Equal(t, failover.NodeDown, failover.Classify(first), "lost before COMMIT: nothing committed")
		assert.Equal(t, n2.Addr(), committedOn, "the new master took it")
		<-failedOver
		var k int
		require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM lost WHERE id = 1").Scan(&k))
		assert.Equal(t, 1, k, "committed once")
	})
}

// waitNoSessions waits until n has no client backend matching where.
func waitNoSessions(t *testing.T, ctx context.Context, n *testcluster.Node, where string) {
	t.Helper()
	waitCount(t, ctx, n, where, func(k int) bool { return k == 0 })
}

// waitSession waits until n has a client backend matching where.
func waitSession(t *testing.T, ctx context.Context, n *testcluster.Node, where string) {
	t.Helper()
	waitCount(t, ctx, n, where, func(k int) bool { return k > 0 })
}

func waitCount(t *testing.T, ctx context.Context, n *testcluster.Node, where string, ok func(int) bool) {
	t.Helper()
	conn, err := n.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	for {
		var k int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND `+where).Scan(&k)
		if err != nil {
			t.Errorf("counting sessions on %s: %v", n.Name(), err)
			return
		}
		if ok(k) {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("sessions on %s where %s: still %d: %v", n.Name(), where, k, ctx.Err())
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// withParams adds query parameters to a URL DSN.
func withParams(dsn string, kv ...string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		panic(err)
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}
