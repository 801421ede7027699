package hasql

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// WaitReplayed waits until every replica that serves reads has replayed
// WAL up to lsn, or ctx ends: after DDL or a write that replica reads must
// see at once (a table created on the master is missing on a replica until
// it replays the CREATE). The replicas are those of the Manager's current
// view, the set AcquireReplica picks from with no lag limit, read again
// while it waits: a replica that leaves it (down, detached) is no longer
// waited for, one that joins is. A replica whose last check is behind lsn
// is asked on a connection of its own pool, backing off from 1ms to 50ms;
// each question is bounded by CheckTimeout, so a hung replica delays the
// others by that at most. With no replica it returns at once. When ctx ends
// first, the error names the replicas still behind and wraps ctx's error;
// it returns ErrClosed once the Manager is closed.
func (m *Manager) WaitReplayed(ctx context.Context, lsn LSN) error {
	b := backoff.WithContext(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(time.Millisecond), backoff.WithMaxInterval(50*time.Millisecond),
		backoff.WithMaxElapsedTime(0)), ctx)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s := m.snap.Load()
		if s.closed {
			return ErrClosed
		}
		var behind []*node
		for _, n := range s.set(setAllReplicas).nodes {
			if n.replayedAny() < lsn && !m.replayedOnConn(ctx, n, lsn) {
				behind = append(behind, n)
			}
		}
		if len(behind) == 0 {
			return nil
		}
		pause := b.NextBackOff()
		if timer == nil {
			timer = time.NewTimer(pause)
		} else {
			timer.Reset(pause)
		}
		select {
		case <-timer.C:
		case <-s.changed:
		case <-m.closed:
			return ErrClosed
		case <-ctx.Done():
			parts := make([]string, len(behind))
			for i, n := range behind {
				parts[i] = fmt.Sprintf("%s at %s", n.cfg.Addr, n.replayedAny())
			}
			return fmt.Errorf("hasql: WaitReplayed %s: replicas behind: %s: %w", lsn, strings.Join(parts, ", "), ctx.Err())
		}
	}
}

// WaitCaughtUp waits until every replica that serves reads has replayed
// the master's current WAL position: Manager.CurrentLSN, then WaitReplayed.
// Call it after DDL (or any write) that reads from replicas must see.
func (m *Manager) WaitCaughtUp(ctx context.Context) error {
	lsn, err := m.CurrentLSN(ctx)
	if err != nil {
		return err
	}
	return m.WaitReplayed(ctx, lsn)
}

// replayedOnConn asks n itself whether it replayed lsn, and records the
// position it reports. Callers that wait at once share one question at a
// time to n (one connection of its pool, not one each): a caller that
// finds one in flight waits for its answer, a position n had replayed
// when it answered, true of every waiter's lsn or not.
func (m *Manager) replayedOnConn(ctx context.Context, n *node, lsn LSN) bool {
	n.waitMu.Lock()
	ask := n.waitAsk
	if ask != nil {
		n.waitMu.Unlock()
		select {
		case <-ask.done:
			return ask.ok && ask.replay >= lsn
		case <-ctx.Done():
		case <-m.closed:
		}
		return false
	}
	ask = &replayAsk{done: make(chan struct{})}
	n.waitAsk = ask
	n.waitMu.Unlock()
	defer func() {
		n.waitMu.Lock()
		n.waitAsk = nil
		n.waitMu.Unlock()
		close(ask.done)
	}()
	ctx, cancel := context.WithTimeout(ctx, m.cfg.CheckTimeout)
	defer cancel()
	conn, err := n.acquire(ctx)
	if err != nil {
		return false
	}
	defer conn.Release()
	replay, line, err := readReplay(ctx, conn)
	if err != nil {
		return false
	}
	n.probedReplay(replay, line)
	ask.replay, ask.ok = replay, true
	return replay >= lsn
}

// replayAsk is a question to a node about its replay position that
// WaitReplayed's callers share (see replayedOnConn): replay and ok are
// set before done is closed.
type replayAsk struct {
	done   chan struct{}
	replay LSN
	ok     bool
}
