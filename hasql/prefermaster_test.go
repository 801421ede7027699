package hasql_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// PreferMaster reads go to the master, to the sync replica while there is
// no master, and to the new master once one is promoted: under a load of
// readers and a writer, no read that began after the Manager saw the master
// gone fails.
func TestPreferMasterThroughFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	waitRole(t, m, "n2", hasql.RoleSyncReplica)
	_, err := m.Master().Exec(ctx, "CREATE TABLE load (id bigserial PRIMARY KEY)")
	require.NoError(t, err)

	port := func(n *testcluster.Node) int {
		p, err := strconv.Atoi(portStr(n.DirectAddr()))
		require.NoError(t, err)
		return p
	}
	p1, p2 := port(n1), port(n2)

	// phase: 0 the master runs; 1 it is being killed; 2 the Manager has
	// seen it gone; 3 n2 is being promoted; 4 n2 is master in the
	// Manager's view. Reads count under the phase they began in.
	var phase atomic.Int32
	type served struct{ onN1Master, onN2Replica, onN2Master, other atomic.Int64 }
	var byPhase [5]served
	var failedAfterGone atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				began := phase.Load()
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				var inRecovery bool
				var at int
				err := m.Replica(hasql.PreferMaster()).QueryRow(rctx, "SELECT pg_is_in_recovery(), inet_server_port()").Scan(&inRecovery, &at)
				cancel()
				if err != nil {
					if began >= 2 {
						failedAfterGone.Add(1)
						lastErr.Store(err)
					}
					continue
				}
				if phase.Load() != began {
					// Begun in one phase, routed in a later one (a
					// goroutine held off the CPU on a busy machine): it
					// says nothing of either.
					continue
				}
				now := &byPhase[began]
				switch {
				case at == p1 && !inRecovery:
					now.onN1Master.Add(1)
				case at == p2 && inRecovery:
					now.onN2Replica.Add(1)
				case at == p2 && !inRecovery:
					now.onN2Master.Add(1)
				default:
					now.other.Add(1)
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // a writer, for load; its errors during the failover are expected
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			_, _ = m.Master().Exec(wctx, "INSERT INTO load DEFAULT VALUES")
			cancel()
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()

	require.Eventually(t, func() bool { return byPhase[0].onN1Master.Load() >= 20 }, 30*time.Second, 5*time.Millisecond)
	phase.Store(1)
	require.NoError(t, n1.Kill())
	require.Eventually(t, func() bool { return roles(m)["n1"] != hasql.RoleMaster }, 30*time.Second, time.Millisecond)
	phase.Store(2)
	require.Eventually(t, func() bool { return byPhase[2].onN2Replica.Load() >= 20 }, 30*time.Second, 5*time.Millisecond,
		"reads go on while there is no master: %v", m.Nodes())
	phase.Store(3)
	require.NoError(t, n2.Promote(ctx))
	waitRole(t, m, "n2", hasql.RoleMaster)
	phase.Store(4)
	require.Eventually(t, func() bool { return byPhase[4].onN2Master.Load() >= 20 }, 30*time.Second, 5*time.Millisecond)

	assert.Zero(t, failedAfterGone.Load(), "reads that began after the Manager saw the master gone fail: %v", lastErr.Load())
	assert.Zero(t, byPhase[0].other.Load()+byPhase[0].onN2Master.Load(), "the master serves while it runs (or n2, once n1 was seen gone)")
	assert.Zero(t, byPhase[2].other.Load()+byPhase[2].onN1Master.Load(), "with no master, the sync replica serves (n3 never)")
	assert.Zero(t, byPhase[4].other.Load()+byPhase[4].onN1Master.Load()+byPhase[4].onN2Replica.Load(), "the new master serves")
	t.Logf("reads: master n1 %d; no master: sync n2 %d; new master n2 %d",
		byPhase[0].onN1Master.Load(), byPhase[2].onN2Replica.Load(), byPhase[4].onN2Master.Load())
}

// SyncOnly with PreferMaster while there is no master takes a sync
// replica or none: the prepared sets handed out the async one (the same
// options through the general path, with a MaxLag that changes nothing,
// refused as SyncOnly says).
func TestPreferMasterSyncOnlyWithoutMasterTakesNoAsync(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1 := c.Nodes()[0]
	// The Manager loses n1 while n2 streams on from it: were n1 killed,
	// n2's check might see its walreceiver gone before n1's failed, and
	// n2 would be detached (not streaming from the master), not async.
	p := newCutProxy(t, n1.DirectAddr())
	m := newManager(t, ctx, withParams(strings.Replace(c.DSN(), n1.Addr(), p.addr(), 1), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	waitRole(t, m, "n2", hasql.RoleAsyncReplica)
	p.cut()
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, 30*time.Second, time.Millisecond)
	require.Equal(t, hasql.RoleAsyncReplica, roles(m)["n2"])

	for _, opts := range [][]hasql.ReplicaOption{
		{hasql.PreferMaster(), hasql.SyncOnly()},
		{hasql.PreferMaster(), hasql.SyncOnly(), hasql.MaxLag(0, 0)},
	} {
		actx, acancel := context.WithTimeout(ctx, 300*time.Millisecond)
		conn, err := m.AcquireReplica(actx, opts...)
		acancel()
		served := ""
		if conn != nil {
			served = nodeOf(c, conn)
			conn.Release()
		}
		require.ErrorIs(t, err, hasql.ErrNoReplica, "%d options: served %q", len(opts), served)
	}
}

// PreferMaster reads go to the replicas (the sync ones while any) when the
// master's pool fails to connect while the view still names it master:
// the read waited for the view to change and failed, replicas unused.
func TestPreferMasterTakesReplicasWhenTheMastersPoolFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	master := c.Nodes()[0].Addr()
	var refuse atomic.Bool
	hook := func(nc hasql.NodeConfig, pc *pgxpool.Config) error {
		if nc.Addr == master {
			pc.BeforeConnect = func(context.Context, *pgx.ConnConfig) error {
				if refuse.Load() {
					return errors.New("the master's pool may not connect")
				}
				return nil
			}
		}
		return nil
	}
	// No idle connection kept ready: the master's pool has to connect.
	m := newManager(t, ctx, withParams(c.DSN(), "pool_min_idle_conns", "0"), hasql.WithConfigureNode(hook))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	refuse.Store(true) // the check connections are made: only the pool's fail
	for _, opts := range [][]hasql.ReplicaOption{{hasql.PreferMaster()}, {hasql.PreferMaster(), hasql.SyncOnly()}} {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := m.AcquireReplica(actx, opts...)
		acancel()
		if len(opts) == 2 {
			// n2 is async: SyncOnly takes none.
			if conn != nil {
				served := nodeOf(c, conn)
				conn.Release()
				t.Fatalf("PreferMaster with SyncOnly took %s (%v)", served, m.Nodes())
			}
			require.Error(t, err)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, "n2", nodeOf(c, conn))
		conn.Release()
	}
	assert.Equal(t, hasql.RoleMaster, roles(m)["n1"], "the view still names n1 master")
}
