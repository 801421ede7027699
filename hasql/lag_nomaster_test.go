//go:build linux

package hasql_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// cutProxy forwards TCP connections to target until cut, then refuses them.
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// The Manager loses its way to the master (a partition between it and the
// master only: the master goes on taking other clients' writes, its
// replicas stream). A replica's replay then stops (pg_wal_replay_pause, a
// conflict, a hung startup process). With no master known, the replica
// kept the lag it had at the master's last check, 0 and known, for as long
// as the master stayed out of sight: reads under a lag limit went to it
// while it fell behind without bound. The lag cannot be measured: it is
// unknown, never 0.
func TestLagUnknownWhileNoMasterKnown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n3 := c.Nodes()[0], c.Nodes()[2]
	p := newCutProxy(t, n1.DirectAddr())
	dsn := strings.Replace(c.DSN(), n1.Addr(), p.addr(), 1)
	m := newManager(t, ctx, withParams(dsn, "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	require.Eventually(t, func() bool { st := statusOf(m, "n3"); return st.LagKnown && st.Lag < time.Second },
		10*time.Second, 5*time.Millisecond, "n3 within a second: %v", m.Nodes())

	p.cut() // the Manager no longer reaches n1; n2 and n3 still stream from it
	require.Eventually(t, func() bool { return !statusOf(m, p.addr()).Up || !statusOf(m, "n1").Up },
		10*time.Second, 5*time.Millisecond)
	require.NoError(t, n3.PauseReplay(ctx))
	paused := time.Now()
	// Other clients write on n1 all along.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := n1.Conn(wctx)
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		conn.Exec(wctx, "CREATE TABLE IF NOT EXISTS w (v int)")
		for wctx.Err() == nil {
			conn.Exec(wctx, "INSERT INTO w VALUES (1)")
			time.Sleep(20 * time.Millisecond)
		}
	}()
	defer func() { wcancel(); <-done }()

	// Once n3 has not replayed for 3 s while writes go on, its lag is over
	// a second: no read under MaxLag(1s) goes to it.
	var last hasql.NodeStatus
	ok := assert.Eventually(t, func() bool {
		if time.Since(paused) < 3*time.Second {
			return false
		}
		last = statusOf(m, "n3")
		return last.LastCheck.After(paused.Add(3*time.Second)) && (!last.LagKnown || last.Lag > time.Second)
	}, 15*time.Second, 10*time.Millisecond, "n3, paused for seconds while n1 writes, still within a second of lag")
	t.Logf("n3: paused %v, replayed %s, received %s, lag %d bytes %s known %v", last.ReplayPaused, last.LSN, last.ReceiveLSN, last.LagBytes, last.Lag, last.LagKnown)
	if !ok {
		t.FailNow()
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	conn, err := m.AcquireReplica(short, hasql.MaxLag(0, time.Second))
	cancelShort()
	if err == nil {
		got := nodeOf(c, conn)
		conn.Release()
		require.NotEqual(t, "n3", got, "a read under MaxLag(1s) went to n3, paused for seconds")
	}
}

// With a lag limit (hasql_max_lag, a common setting), no replica's lag is
// known while no master is, so no replica is within the limit, the sync
// replica included: it flushed every acknowledged commit but may not have
// replayed them (its replay paused or in conflict), and the master out of
// the Manager's sight may have made another replica the sync one. A
// PreferMaster read then waits for a master, as AcquireMaster does, and
// its error says why no replica was taken; once a replica is promoted it
// is served there.
func TestPreferMasterThroughFailoverWithLagLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms", "hasql_max_lag", "30s"))
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	waitRole(t, m, "n2", hasql.RoleSyncReplica)
	require.Eventually(t, func() bool { st := statusOf(m, "n2"); return st.LagKnown }, 30*time.Second, 5*time.Millisecond)

	require.NoError(t, n1.Kill())
	require.Eventually(t, func() bool { return m.Stat().Master == "" }, 30*time.Second, 5*time.Millisecond)
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	var onReplica bool
	err := m.Replica(hasql.PreferMaster()).QueryRow(short, "SELECT pg_is_in_recovery()").Scan(&onReplica)
	require.ErrorIs(t, err, hasql.ErrNoReplica, "no master, and no replica's lag is known under hasql_max_lag")
	require.ErrorContains(t, err, "lag unknown")

	done := make(chan error, 1)
	go func() {
		rctx, rcancel := context.WithTimeout(ctx, time.Minute)
		defer rcancel()
		var inRecovery bool
		err := m.Replica(hasql.PreferMaster()).QueryRow(rctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery)
		if err == nil && inRecovery {
			err = errors.New("served by a replica")
		}
		done <- err
	}()
	require.NoError(t, n2.Promote(ctx))
	require.NoError(t, <-done, "the read that waited is served by the new master")
}
