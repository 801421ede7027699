package hasql_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestFailedDBAndListenConnectsHaveTheNodeChecked: a connect of DB's
// connector or of a Listener that fails has its node checked at once and
// the failure shown as the node's LastError, as a failed acquire from the
// node's pool does: the check may find the server down well before the
// next periodic check (ten minutes away here). The refusal is one the
// check connection does not meet: the application's BeforeConnect (a
// credentials fetch, say) fails.
func TestFailedDBAndListenConnectsHaveTheNodeChecked(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})

	errRefused := errors.New("credentials fetch failed")
	var refuse atomic.Bool
	cfg, err := hasql.ParseConfig(withParams(c.DSN(), "hasql_check_interval", "10m",
		"hasql_check_timeout", "300ms", "pool_min_conns", "0"))
	require.NoError(t, err)
	cfg.Logger = quiet
	cfg.PoolConfig.BeforeConnect = func(context.Context, *pgx.ConnConfig) error {
		if refuse.Load() {
			return errRefused
		}
		return nil
	}
	// The decision trace shows the errors the core was told of (a later
	// check's success clears LastError).
	tracePath := filepath.Join(t.TempDir(), "decisions.jsonl")
	trace, err := os.Create(tracePath)
	require.NoError(t, err)
	defer trace.Close()
	cfg.DecisionTrace = trace
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	db := m.DB(hasql.TargetMaster)
	defer db.Close()

	// checkedAfter waits for a check of the node that ended after since,
	// and for the failure of what told to the decision core.
	checkedAfter := func(since time.Time, what string) {
		t.Helper()
		told := func() bool {
			b, err := os.ReadFile(tracePath)
			require.NoError(t, err)
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, `"kind":"apperror"`) && strings.Contains(line, `"err":"`+what+`: `) &&
					strings.Contains(line, errRefused.Error()) {
					return true
				}
			}
			return false
		}
		require.Eventually(t, func() bool { return m.Nodes()[0].LastCheck.After(since) && told() },
			time.Minute, 5*time.Millisecond, "the node is checked after the failed %s and the core told of it: %+v", what, m.Nodes())
	}

	before := m.Nodes()[0].LastCheck
	require.False(t, before.IsZero())
	refuse.Store(true)
	err = db.PingContext(ctx)
	require.ErrorIs(t, err, errRefused)
	checkedAfter(before, "DB connect")

	before = m.Nodes()[0].LastCheck
	_, err = m.Listen(ctx, "events")
	require.ErrorIs(t, err, errRefused)
	checkedAfter(before, "listen")

	// The refusal over, both connect.
	refuse.Store(false)
	require.NoError(t, db.PingContext(ctx))
	l, err := m.Listen(ctx, "events")
	require.NoError(t, err)
	l.Close()

	// The trace, app errors included, gives the same decisions replayed.
	m.Close()
	_, err = trace.Seek(0, 0)
	require.NoError(t, err)
	_, err = hasql.ReplayDecisionTrace(trace)
	require.NoError(t, err)
}
