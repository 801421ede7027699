//go:build linux

package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// CommitToken and CommitLSN commit the transaction they are given and read
// the position on its connection right after. A transaction begun inside
// another one (tx.Begin: a savepoint) commits nothing when it "commits": its
// writes commit with the outer transaction, at a later position. The token
// read then names a position before the write's commit record: a replica
// that replayed it does not have the write. Before, both returned a token
// (a position) and no error, for a write no other session could see.
func TestCommitTokenOfANestedTransactionIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	m := newManager(t, ctx, c.DSN())
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	_, err := m.Master().Exec(ctx, "CREATE TABLE nested_notes (id int PRIMARY KEY)")
	require.NoError(t, err)

	commits := map[string]func(context.Context, pgx.Tx) error{
		"CommitToken": func(ctx context.Context, tx pgx.Tx) error { _, err := hasql.CommitToken(ctx, tx); return err },
		"CommitLSN":   func(ctx context.Context, tx pgx.Tx) error { _, err := hasql.CommitLSN(ctx, tx); return err },
	}
	id := 0
	for name, commit := range commits {
		for _, begin := range []string{"m.Master().Begin", "*pgx.Conn"} {
			id++
			var outer pgx.Tx
			switch begin {
			case "m.Master().Begin":
				outer, err = m.Master().Begin(ctx)
				require.NoError(t, err)
			default:
				conn, err := pgx.Connect(ctx, c.Nodes()[0].DSN())
				require.NoError(t, err)
				defer conn.Close(context.Background())
				outer, err = conn.Begin(ctx)
				require.NoError(t, err)
			}
			inner, err := outer.Begin(ctx)
			require.NoError(t, err)
			_, err = inner.Exec(ctx, "INSERT INTO nested_notes VALUES ($1)", id)
			require.NoError(t, err)

			err = commit(ctx, inner)
			var seen int
			require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM nested_notes WHERE id = $1", id).Scan(&seen))
			if err == nil {
				assert.Equal(t, 1, seen, "%s of a transaction nested in one begun on %s gave a position and no error, for a write no other session sees (its outer transaction is still open)", name, begin)
			} else {
				t.Logf("%s (%s): %v", name, begin, err)
				assert.Zero(t, seen)
			}
			require.NoError(t, outer.Rollback(ctx))
		}
	}
}
