package hasql

import (
	"context"
	"fmt"
)

// boundAcquire bounds an acquire whose context has no deadline by
// Config.AcquireTimeout. Only acquires that wait (the slow path) get here:
// one that finds a node at once costs nothing more.
func (m *Manager) boundAcquire(ctx context.Context) (context.Context, context.CancelFunc) {
	d := m.cfg.AcquireTimeout
	if _, ok := ctx.Deadline(); ok || d <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeoutCause(ctx, d,
		fmt.Errorf("%w: the acquire's context has no deadline, and hasql_acquire_timeout (Config.AcquireTimeout) is %s", context.DeadlineExceeded, d))
}

// hasDeadline reports whether ctx has a deadline.
func hasDeadline(ctx context.Context) bool {
	_, ok := ctx.Deadline()
	return ok
}

// ctxErr is why ctx ended: its cause when it has one (see boundAcquire),
// its error otherwise.
func ctxErr(ctx context.Context) error {
	if c := context.Cause(ctx); c != nil {
		return c
	}
	return ctx.Err()
}
