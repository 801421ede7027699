package failover_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/testcluster"
)

// fn's own errors on a healthy master come back as they are, after one
// run: a network error or an EOF that is not the connection's (a refused
// call to another service, a body cut short), and a write refused by the
// READ ONLY mode the caller asked for (25006 from a master that is still
// master). Taken for the cluster's, fn ran again (and its outside effects
// with it) and the caller heard "node down" or "role changed".
func TestRunInTxReturnsFnOwnErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := readyManager(t, ctx, c, 1, "CREATE TABLE side_effects (id serial PRIMARY KEY, note text)")

	// A real refused dial, as a client of another service gets it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	_, dialErr := net.DialTimeout("tcp", addr, time.Second)
	require.Error(t, dialErr)
	var v map[string]any
	decodeErr := json.NewDecoder(strings.NewReader(`{"amount": 1`)).Decode(&v)
	require.Error(t, decodeErr)

	for _, tc := range []struct {
		name string
		own  error
	}{{"refused call to another service", dialErr}, {"truncated request body", decodeErr}} {
		t.Run(tc.name, func(t *testing.T) {
			runs := 0
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 4}, func(ctx context.Context, tx pgx.Tx) error {
				runs++
				if _, err := tx.Exec(ctx, "INSERT INTO side_effects (note) VALUES ('x')"); err != nil {
					return err
				}
				return tc.own
			})
			assert.Equal(t, 1, runs, "fn ran again")
			assert.Same(t, tc.own, err, "the caller's own error, as it is")
		})
	}
	t.Run("write in a read-only transaction", func(t *testing.T) {
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 4, TxOptions: pgx.TxOptions{AccessMode: pgx.ReadOnly}},
			func(ctx context.Context, tx pgx.Tx) error {
				runs++
				_, err := tx.Exec(ctx, "INSERT INTO side_effects (note) VALUES ('ro')")
				return err
			})
		assert.Equal(t, 1, runs, "fn ran again")
		assert.NotErrorIs(t, err, failover.ErrRoleChanged)
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "%v", err)
		assert.Equal(t, "25006", pgErr.Code)
	})
	var rows int
	require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM side_effects").Scan(&rows))
	assert.Zero(t, rows, "every transaction rolled back")
}

// The master is partitioned and another promoted while fn runs: fn's next
// statement on the old master's connection fails (pgxha cuts it); RunInTx
// must take that for the cluster's (run fn again on the new master), not
// for fn's own error (the rule above: pgx closes a connection it lost).
func TestRunInTxReRunsWhenTheMasterIsLostMidFn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := readyManager(t, ctx, c, 1, "CREATE TABLE mid (id int PRIMARY KEY)")
	require.Eventually(t, func() bool {
		conn, err := n2.Conn(ctx)
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		var ok bool
		return conn.QueryRow(ctx, "SELECT to_regclass('mid') IS NOT NULL").Scan(&ok) == nil && ok
	}, 30*time.Second, 10*time.Millisecond)

	runs := 0
	var errs []error
	err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 5}, func(ctx context.Context, tx pgx.Tx) error {
		runs++
		if _, err := tx.Exec(ctx, "INSERT INTO mid VALUES (1)"); err != nil {
			errs = append(errs, err)
			return err
		}
		if runs == 1 {
			require.NoError(t, n1.Partition())
			require.NoError(t, c.Failover(ctx, n2))
		}
		_, err := tx.Exec(ctx, "INSERT INTO mid VALUES (2)")
		if err != nil {
			errs = append(errs, err)
			t.Logf("fn error (class %v, closed %v): %v", failover.Classify(err), tx.Conn().IsClosed(), err)
		}
		return err
	})
	t.Logf("runs %d errs %v", runs, errs)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, runs, 2)
	conn, err := n2.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var k int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM mid").Scan(&k))
	assert.Equal(t, 2, k)
}
