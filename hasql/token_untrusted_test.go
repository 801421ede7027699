package hasql_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
)

// tokenTestMaster starts a fake master (system identifier sysid, timeline
// 1) that counts the checks it answers, and a Manager that reaches it
// alone, pinned to sysid.
func tokenTestMaster(t *testing.T, ctx context.Context, sysid uint64, params string) (*hasql.Manager, *atomic.Int64) {
	t.Helper()
	var checks atomic.Int64
	pg := newQueryPG(t, func(be *pgproto3.Backend, sql string) bool {
		switch {
		case strings.Contains(sql, "pg_control_system()), pg_postmaster_start_time()"):
			sendServer(be, sysid, "fake")
		case strings.Contains(sql, "pg_is_in_recovery()"):
			checks.Add(1)
			sendMasterCheck(be)
		default:
			sendRow(be, []uint32{oidInt4}, []any{1})
		}
		return true
	})
	dsn := fmt.Sprintf("postgres://app:pw@%s/app?sslmode=disable&hasql_system_identifier=%d%s", pg.Addr(), sysid, params)
	m := newManager(t, ctx, dsn)
	waitUntil(t, ctx, "the fake master is master", func() bool { return m.Stat().Master != "" })
	return m, &checks
}

// TestForgedAheadTokenDoesNotMultiplyChecks: a token is input (a cookie,
// a header). One that names a timeline the cluster never had asks the
// nodes for a check at most once per CheckInterval, however many reads
// bring it: the master is checked at most twice as often as it is idle,
// not once per request.
func TestForgedAheadTokenDoesNotMultiplyChecks(t *testing.T) {
	for _, profile := range []string{"default", "fleet"} {
		t.Run(profile, func(t *testing.T) { forgedAheadTokenChecks(t, profile) })
	}
}

func forgedAheadTokenChecks(t *testing.T, profile string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const sysid = 7000000000000000077
	m, checks := tokenTestMaster(t, ctx, sysid, "&hasql_profile="+profile)
	interval := m.Config().CheckInterval

	// Nothing of the cluster needs to be known: system identifier 0 is
	// "unknown", and timeline ffffffff is past any the cluster has.
	forged, err := hasql.ParseToken("v1.ffffffff.0.0")
	require.NoError(t, err)
	const readers, each = 8, 50
	var ahead atomic.Int64
	var wg sync.WaitGroup
	base, start := checks.Load(), time.Now()
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				rctx, rcancel := context.WithTimeout(ctx, 10*time.Millisecond)
				conn, err := m.AcquireReplica(rctx, hasql.After(forged))
				rcancel()
				if err == nil {
					conn.Release()
				}
				ahead.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed, loaded := time.Since(start), checks.Load()-base
	// The master's own checks (one per interval, and one at each end of
	// the window), and one more per interval that the tokens asked for.
	bound := 2*int64(elapsed/interval) + 3
	t.Logf("%s: %d checks of the master in %s while %d reads brought a forged token (bound %d)", profile, loaded, elapsed, ahead.Load(), bound)
	require.LessOrEqual(t, loaded, bound,
		"reads with a forged token of timeline ffffffff made the Manager check the master %d times in %s (interval %s)", loaded, elapsed, interval)
}
