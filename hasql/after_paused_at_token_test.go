package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// n2's replay is paused right after it replayed write 1: a read after
// write 1's token sees it; a read after write 2's (past where n2 stands)
// sees write 2, from the master if need be, never n2 without it.
func TestAfterWithReplayPausedAtTheToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n2 := c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	_, err := m.Master().Exec(ctx, "CREATE TABLE notes (id int PRIMARY KEY)")
	require.NoError(t, err)
	_, tok1, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (1)")
	require.NoError(t, err)
	replayedTo(t, m, tok1.LSN)
	require.NoError(t, n2.PauseReplay(ctx))
	_, tok2, err := m.Master().ExecToken(ctx, "INSERT INTO notes VALUES (2)")
	require.NoError(t, err)
	for i := range 20 {
		for id, tok := range map[int]hasql.Token{1: tok1, 2: tok2} {
			var found int
			var inRecovery bool
			require.NoError(t, m.Replica(hasql.After(tok)).QueryRow(ctx, "SELECT count(*), pg_is_in_recovery() FROM notes WHERE id = $1", id).Scan(&found, &inRecovery))
			require.Equal(t, 1, found, "read %d after write %d's token %s (on a replica: %v)", i, id, tok, inRecovery)
		}
	}
}
