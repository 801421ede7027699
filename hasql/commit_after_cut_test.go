package hasql_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
)

// setsDiscoverer reports the sets sent on its channel.
type setsDiscoverer chan []discovery.Node

func (d setsDiscoverer) Run(ctx context.Context, update func(discovery.State)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-d:
			update(discovery.State{Nodes: s})
		}
	}
}

// TestRunInTxCommitNotSentOnACutConnectionRunsAgain: the master leaves the
// discovered set while RunInTx's fn runs, and pgxha cuts its connections
// (they may have taken writes). fn then returns nil and RunInTx sends
// COMMIT on the connection pgxha closed: the write fails before a byte of
// it leaves, so nothing committed, and the transaction may run again on
// the next master (here the same server, back in the set). RunInTx
// reported it as ErrCommitUnknown, an outcome the service has to find
// out by hand, though COMMIT never left.
func TestRunInTxCommitNotSentOnACutConnectionRunsAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr := hangingMaster(t) // never hangs here
	d := make(setsDiscoverer, 4)
	d <- []discovery.Node{{Addr: addr}}
	m, err := hasql.New(ctx, "postgres://u@"+addr+"/db?sslmode=disable&default_query_exec_mode=simple_protocol"+
		"&hasql_check_timeout=200ms&hasql_check_interval=50ms", hasql.WithLogger(quiet), hasql.WithDiscoverer(d))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 0), "setup: the fake is the master")

	var runs atomic.Int32
	var classes []failover.Class
	err = failover.RunInTx(ctx, m, failover.Options{OnRetry: func(_ int, err error, c failover.Class, _ time.Duration) {
		t.Logf("retry after %v (%s)", err, c)
		classes = append(classes, c)
		d <- []discovery.Node{{Addr: addr}} // the master is back in the set
	}}, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			return err
		}
		if runs.Add(1) > 1 {
			return nil
		}
		// The master leaves the set (another address takes its place):
		// pgxha cuts its connections, this one among them.
		d <- []discovery.Node{{Addr: "127.0.0.1:1"}}
		for tx.Conn().PgConn().Conn().SetWriteDeadline(time.Time{}) == nil {
			select {
			case <-ctx.Done():
				return errors.New("the connection of the master that left the set was never cut")
			case <-time.After(5 * time.Millisecond):
			}
		}
		return nil
	})
	t.Logf("RunInTx: %v; fn ran %d times", err, runs.Load())
	require.NotErrorIs(t, err, failover.ErrCommitUnknown, "COMMIT failed to leave on a connection pgxha had closed: nothing committed")
	require.NoError(t, err)
	require.EqualValues(t, 2, runs.Load())
}
