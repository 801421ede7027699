package hasql

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// lsnSQL reads a position as an integer, which every pgx version scans.
const (
	currentLSNSQL = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8"
	replayLSNSQL  = "SELECT (coalesce(pg_last_wal_replay_lsn(), '0/0'::pg_lsn) - '0/0'::pg_lsn)::int8"
)

// RowQuerier is anything that runs a one-row query: a pgx.Tx, a *pgx.Conn,
// a *pgxpool.Conn, a *pgxpool.Pool or a *Querier.
type RowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CurrentLSN returns pg_current_wal_lsn() read through q, which must reach
// the master. Called on the connection (or in the transaction) that wrote,
// after the commit, it is at or past the commit's LSN: pass it to MinLSN to
// read your own writes from a replica.
func CurrentLSN(ctx context.Context, q RowQuerier) (LSN, error) {
	var v int64
	if err := q.QueryRow(ctx, currentLSNSQL).Scan(&v); err != nil {
		return 0, fmt.Errorf("hasql: pg_current_wal_lsn: %w", err)
	}
	return LSN(v), nil
}

// CurrentLSN returns the master's current WAL position; see the function
// CurrentLSN.
func (m *Manager) CurrentLSN(ctx context.Context) (LSN, error) {
	return CurrentLSN(ctx, m.Master())
}

// acquireMinLSN acquires a replica that has replayed o.minLSN: first among
// those whose last check shows it, then by asking candidates on the
// connection itself. It polls, backing off from 1ms to 50ms, until one has
// caught up; after o.minLSNWait it falls back to the master with
// FallbackToMaster, otherwise it keeps trying until ctx ends.
func (m *Manager) acquireMinLSN(ctx context.Context, o *replicaOptions) (*pgxpool.Conn, error) {
	var start time.Time
	if m.tel.timed() {
		start = time.Now()
	}
	ctx, span := m.tel.startAcquire(ctx, targetReplica)
	conn, n, err := m.minLSNLoop(ctx, o)
	m.tel.acquired(ctx, targetReplica, n, start, span, err)
	return conn, err
}

func (m *Manager) minLSNLoop(ctx context.Context, o *replicaOptions) (*pgxpool.Conn, *node, error) {
	deadline := time.Now().Add(o.minLSNWait)
	others := *o
	others.minLSN = 0
	others.fallback = false
	pause := time.Millisecond
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s := m.snap.Load()
		if s.closed {
			return nil, nil, ErrClosed
		}
		// Replicas whose last check is at or past the LSN.
		if set := m.customSet(s, o); len(set.nodes) > 0 {
			n := set.nodes[set.pick()]
			conn, err := n.pool.Acquire(ctx)
			if err == nil {
				if m.countInUse {
					n.inUse.Add(1)
				}
				return conn, n, nil
			}
			if ctx.Err() != nil {
				return nil, nil, m.noNode(targetReplica, ctx.Err())
			}
			n.acquireFailed(err)
		}
		// The others: ask each on a connection.
		set, _ := m.candidates(s, targetReplica, &others, nil)
		for i := range set.nodes {
			n := set.nodes[(set.pick()+i)%len(set.nodes)]
			conn, err := n.pool.Acquire(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil, nil, m.noNode(targetReplica, ctx.Err())
				}
				n.acquireFailed(err)
				continue
			}
			if m.countInUse {
				n.inUse.Add(1)
			}
			var replay int64
			if err := conn.QueryRow(ctx, replayLSNSQL).Scan(&replay); err == nil && LSN(replay) >= o.minLSN {
				for cur := n.replayLSN.Load(); cur < uint64(replay) && !n.replayLSN.CompareAndSwap(cur, uint64(replay)); cur = n.replayLSN.Load() {
				}
				return conn, n, nil
			}
			conn.Release()
		}
		if o.fallback && !time.Now().Before(deadline) {
			conn, n, err := m.acquireLoop(ctx, targetMaster, nil, nil, nil, nil)
			return conn, n, err
		}
		if timer == nil {
			timer = time.NewTimer(pause)
		} else {
			timer.Reset(pause)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			return nil, nil, m.noNode(targetReplica, ctx.Err())
		case <-m.closed:
			return nil, nil, ErrClosed
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}
