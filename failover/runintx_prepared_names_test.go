package failover_test

// A prepared statement run by its name inside RunInTx's fn commits (COMMIT
// AND CHAIN, so the transaction status after it does not show the end), then
// a later statement fails with a retryable error. RunInTx promises: "a
// prepared statement run by its name as the SQL it was prepared with (a name
// pgx did not see prepared is taken for a possible COMMIT ...)" and "RunInTx
// then commits nothing more and never runs fn again". It must hold for any
// name: one that begins like pgx's statement cache's ("stmtcache_"), and
// one prepared past the names a connection keeps the SQL of, whose COMMIT
// is then taken as possible.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/testcluster"
)

func TestRunInTxNeverRerunsFnAfterAPreparedCommitUnderAnyName(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := readyManager(t, ctx, c, 1, "CREATE TABLE prepared_commit_names (n serial PRIMARY KEY, note text)")
	count := func(t *testing.T, note string) int {
		var k int
		require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM prepared_commit_names WHERE note = $1", note).Scan(&k))
		return k
	}
	run := func(t *testing.T, note string, prep func(ctx context.Context, tx pgx.Tx) (string, error)) {
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if _, err := tx.Exec(ctx, "INSERT INTO prepared_commit_names (note) VALUES ($1)", note); err != nil {
				return err
			}
			name, err := prep(ctx, tx)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, name); err != nil { // pgx runs the prepared COMMIT AND CHAIN by its name
				return err
			}
			// A serialization failure after the commit: the new transaction fails.
			_, err = tx.Exec(ctx, "DO $$BEGIN RAISE EXCEPTION 'after the commit' USING ERRCODE = '40001'; END$$")
			return err
		})
		k := count(t, note)
		t.Logf("RunInTx: %v; fn ran %d times; rows committed %d", err, runs, k)
		assert.Equal(t, 1, runs, "fn ran again after a statement of it committed")
		assert.Equal(t, 1, k, "the committed insert was run again and committed twice")
	}

	// Control: the same with a name the tracker keeps holds (fn runs once).
	t.Run("control: name kept", func(t *testing.T) {
		run(t, "ctl", func(ctx context.Context, tx pgx.Tx) (string, error) {
			name := "app ctl chain"
			_, err := tx.Conn().Prepare(ctx, name, "COMMIT AND CHAIN")
			return name, err
		})
	})

	t.Run("name with the stmtcache_ prefix", func(t *testing.T) {
		run(t, "pfx", func(ctx context.Context, tx pgx.Tx) (string, error) {
			name := "stmtcache_app commit"
			_, err := tx.Conn().Prepare(ctx, name, "COMMIT AND CHAIN")
			return name, err
		})
	})

	t.Run("name past maxPrepared", func(t *testing.T) {
		run(t, "full", func(ctx context.Context, tx pgx.Tx) (string, error) {
			conn := tx.Conn()
			for i := 0; i < 4100; i++ {
				if _, err := conn.Prepare(ctx, fmt.Sprintf("app_s%d", i), "SELECT 1"); err != nil {
					return "", err
				}
			}
			name := "app commit chain"
			_, err := conn.Prepare(ctx, name, "COMMIT AND CHAIN")
			return name, err
		})
	})
}
