package failover_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/testcluster"
)

// An error from another connection of fn's is fn's, returned as it is:
// an error of a retryable class from one (here a serialization failure,
// and 25006 from a replica), with the transaction's own connection open
// and not failed, ran fn again, and fn's committed audit write with it.
func TestRunInTxRetryableErrorOfAnotherConnectionIsFnsOwn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := readyManager(t, ctx, c, 1, "CREATE TABLE app_audit (n serial PRIMARY KEY, note text)")
	for _, tc := range []struct{ name, other string }{
		{"40001 on another connection", "DO $$BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END$$"},
		{"25006 from a replica", "CREATE TEMP TABLE app_x (n int)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runs := 0
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
				runs++
				if _, err := m.Master().Exec(ctx, "INSERT INTO app_audit (note) VALUES ($1)", tc.name); err != nil {
					return err
				}
				q := m.Master()
				if tc.name == "25006 from a replica" {
					q = m.Replica()
				}
				_, err := q.Exec(ctx, tc.other)
				return err
			})
			var k int
			require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM app_audit WHERE note = $1", tc.name).Scan(&k))
			t.Logf("RunInTx: %v; runs %d; audit rows %d", err, runs, k)
			assert.Equal(t, 1, runs, "fn ran again for another connection's error")
		})
	}
}
