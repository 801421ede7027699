//go:build linux

package hasql_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestStaleMasterStaysStaleWhenTheNewMasterLeavesTheSet: n2 is promoted
// while n1 runs on, and the Manager routes writes to n2 on timeline 2, n1
// stale. Then the discoverer's set loses n2 (its DNS record or Patroni
// member gone for a while) while n3 still follows n1. The Manager saw
// timeline 2 on a master: n1 stays stale, and a write is refused with the
// stale master's error rather than committed on the branch n2's promotion
// left (it used to be: the timeline went with n2). ForgetTimeline gives n1
// the writes back.
func TestStaleMasterStaysStaleWhenTheNewMasterLeavesTheSet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	execOn(t, ctx, n1, "CREATE TABLE left_branch (v int)")
	d := newSetDiscoverer(nodesOf(n1, n2, n3)...)
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"), hasql.WithDiscoverer(d))
	require.NoError(t, m.WaitReady(ctx, 1, 2))

	require.NoError(t, n2.Promote(ctx))
	waitUntil(t, ctx, "n2 is master, n1 stale", func() bool {
		return statusAt(m, n2).Role == hasql.RoleMaster && statusAt(m, n1).Role == hasql.RoleStaleMaster
	})
	_, err := m.Master().Exec(ctx, "CREATE TABLE on_timeline_2 (v int)")
	require.NoError(t, err)

	d.set(nodesOf(n1, n3)...) // n2 leaves the set
	waitUntil(t, ctx, "n2 left the set", func() bool { return len(m.Nodes()) == 2 })
	since := time.Now()
	waitUntil(t, ctx, "n1 checked since", func() bool { return statusAt(m, n1).LastCheck.After(since) })
	require.Equal(t, hasql.RoleStaleMaster, statusAt(m, n1).Role, "n1 after n2 left: %+v", m.Nodes())
	require.Empty(t, m.Stat().Master)

	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = m.Master().Exec(wctx, "INSERT INTO left_branch VALUES (1)")
	wcancel()
	require.Error(t, err, "a write went to n1, on the timeline n2's promotion left: %+v", m.Nodes())
	require.True(t, errors.Is(err, hasql.ErrStaleMaster), "the write's error says why: %v", err)
	require.EqualValues(t, 0, lsnOn(t, ctx, n1, "SELECT count(*) FROM left_branch"), "rows written on the stale n1")

	// The operator gives up timeline 2: n1 takes the writes.
	m.ForgetTimeline()
	waitUntil(t, ctx, "n1 master after ForgetTimeline", func() bool { return m.Stat().Master == n1.Addr() })
	_, err = m.Master().Exec(ctx, "INSERT INTO left_branch VALUES (2)")
	require.NoError(t, err)
}
