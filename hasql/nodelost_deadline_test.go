package hasql_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
)

// firedCtx is a context whose deadline comes when the test fires it: its
// error is context.DeadlineExceeded, as a deadline's.
type firedCtx struct {
	context.Context
	done chan struct{}
}

func newFiredCtx() *firedCtx {
	return &firedCtx{Context: context.Background(), done: make(chan struct{})}
}

func (c *firedCtx) Done() <-chan struct{} { return c.done }

func (c *firedCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func (c *firedCtx) fire() { close(c.done) }

// hangingMaster is the connection string's one host: a master (no
// password asked) until a statement naming pgxha_test_hang arrives, after
// which it answers nothing more on any session: it hangs, as a stopped or
// partitioned server does. Checks run with the simple protocol (prepared
// statements refused, as a pooler in transaction mode refuses them); pool
// connections get their start-time look answered and their simple
// queries run in a transaction that BEGIN, COMMIT and ROLLBACK open and
// end.
func hangingMaster(t *testing.T) string {
	t.Helper()
	var hung atomic.Bool
	release := make(chan struct{})
	hang := func(sql string) bool {
		if hung.Load() || strings.Contains(sql, "pgxha_test_hang") {
			hung.Store(true)
			<-release
			return true
		}
		return false
	}
	check := masterAnswersNoSenders(7000000000000000123)
	ln := fakePGFor(t, time.Minute, func(c net.Conn, be *pgproto3.Backend, sm *pgproto3.StartupMessage) {
		if welcome(be) != nil {
			return
		}
		if sm.Parameters["application_name"] == "pgxha-check" {
			serveSimple(be, func(be *pgproto3.Backend, sql string) bool {
				return !hang(sql) && check(be, sql)
			})
			return
		}
		status := byte('I')
		var parsed string
		for {
			msg, err := be.Receive()
			if err != nil {
				return
			}
			switch msg := msg.(type) {
			case *pgproto3.Parse:
				parsed = msg.Query
				be.Send(&pgproto3.ParseComplete{})
			case *pgproto3.Bind:
				be.Send(&pgproto3.BindComplete{})
			case *pgproto3.Describe:
				if msg.ObjectType == 'S' {
					be.Send(&pgproto3.ParameterDescription{})
				}
				be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("c"), DataTypeOID: oidInt8, DataTypeSize: 8, TypeModifier: -1}}})
			case *pgproto3.Execute:
				if hang(parsed) {
					return
				}
				v := "1"
				if strings.Contains(parsed, "pg_postmaster_start_time") {
					v = "1767225600000000" // rogueStart
				}
				be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte(v)}})
				be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
			case *pgproto3.Sync:
				be.Send(&pgproto3.ReadyForQuery{TxStatus: status})
			case *pgproto3.Query:
				if hang(msg.String) {
					return
				}
				switch q := strings.ToLower(strings.TrimSpace(msg.String)); {
				case strings.HasPrefix(q, "begin"):
					status = 'T'
					be.Send(&pgproto3.CommandComplete{CommandTag: []byte("BEGIN")})
				case q == "commit":
					status = 'I'
					be.Send(&pgproto3.CommandComplete{CommandTag: []byte("COMMIT")})
				case q == "rollback":
					status = 'I'
					be.Send(&pgproto3.CommandComplete{CommandTag: []byte("ROLLBACK")})
				default:
					sendRow(be, []uint32{oidInt4}, []any{1})
				}
				be.Send(&pgproto3.ReadyForQuery{TxStatus: status})
			case *pgproto3.Terminate:
				return
			}
			if be.Flush() != nil {
				return
			}
		}
	})
	t.Cleanup(func() { close(release) }) // before the server's own cleanup waits for its sessions
	return ln.Addr().String()
}

// hangingManager is a Manager on hangingMaster's fake, checked every
// 50 ms with a 200 ms timeout, closed with the test, once the fake is its
// master; it returns the fake's address too.
func hangingManager(t *testing.T, ctx context.Context) (*hasql.Manager, string) {
	t.Helper()
	addr := hangingMaster(t)
	m, err := hasql.New(ctx, "postgres://u@"+addr+"/db?sslmode=disable&default_query_exec_mode=simple_protocol"+
		"&hasql_check_timeout=200ms&hasql_check_interval=50ms", hasql.WithLogger(quiet))
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.WaitReady(ctx, 1, 0), "setup: the fake is the master")
	return m, addr
}

// waitUnwell waits until the Manager has found its one node unwell: down
// or suspect.
func waitUnwell(t *testing.T, ctx context.Context, m *hasql.Manager) {
	t.Helper()
	for {
		changed := m.Changed()
		if st := m.Nodes()[0]; !st.Up || st.Suspect {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("the hung master was never found down or suspect: %+v", m.Nodes()[0])
		}
	}
}

// TestNodeLostDeadlineOnAMasterFoundUnwell: docs/errors.md says a
// statement's error is a *NodeLostError "when the caller's deadline ended a
// statement on a node that is by then down, suspect, removed or no longer
// the master it was routed to (a hung or partitioned node)", and that
// connections from AcquireMaster get it through hasql.NodeLost. The
// master hangs under a statement on an acquired connection, its checks
// time out, and only then the statement's deadline comes: the error must
// match ErrNodeLost, name the master and say the statement may have run,
// and still match context.DeadlineExceeded.
func TestNodeLostDeadlineOnAMasterFoundUnwell(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, addr := hangingManager(t, ctx)

	conn, err := m.AcquireMaster(ctx)
	require.NoError(t, err)
	defer conn.Release()
	sctx := newFiredCtx()
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(sctx, "SELECT pgxha_test_hang()")
		errc <- err
	}()
	waitUnwell(t, ctx, m)
	sctx.fire() // the statement's deadline, once the Manager found the master unwell
	err = <-errc
	require.Error(t, err)
	err = hasql.NodeLost(conn, err)
	t.Logf("error: %v", err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var le *hasql.NodeLostError
	require.True(t, errors.As(err, &le), "a statement the caller's deadline ended on a master found unwell: want a *NodeLostError, got %T: %v", err, err)
	require.Equal(t, addr, le.Addr)
	require.Equal(t, hasql.RoleMaster, le.Role)
	require.True(t, le.MayHaveRun, "the statement was sent: it may have run")
}

// TestRunInTxDeadlineOnAMasterFoundUnwell: the same through
// failover.RunInTx, whose errors docs/errors.md lists among those that are
// a *NodeLostError when they come from losing the node: fn's statement
// hangs on the master, the Manager finds the master unwell, then RunInTx's
// deadline comes. Nothing committed (COMMIT was never sent), and fn ran
// once; the error must match ErrNodeLost and name the master.
func TestRunInTxDeadlineOnAMasterFoundUnwell(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, addr := hangingManager(t, ctx)

	rctx := newFiredCtx()
	runs := 0
	errc := make(chan error, 1)
	go func() {
		errc <- failover.RunInTx(rctx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			_, err := tx.Exec(ctx, "SELECT pgxha_test_hang()")
			return err
		})
	}()
	waitUnwell(t, ctx, m)
	rctx.fire() // RunInTx's deadline, once the Manager found the master unwell
	err := <-errc
	require.Error(t, err)
	t.Logf("RunInTx: %v", err)
	require.Equal(t, 1, runs)
	require.NotErrorIs(t, err, failover.ErrCommitUnknown, "COMMIT was never sent")
	var le *hasql.NodeLostError
	require.True(t, errors.As(err, &le), "fn's statement ended by RunInTx's deadline on a master found unwell: want a *NodeLostError, got %T: %v", err, err)
	require.Equal(t, addr, le.Addr)
	require.Equal(t, hasql.RoleMaster, le.Role)
}

// TestRunInTxBeginDeadlineOnAMasterFoundUnwell: the same with RunInTx's
// BEGIN hanging (a TxOptions.BeginQuery the fake hangs on): the error is a
// *NodeLostError for the master that says nothing may have run, fn never
// ran.
func TestRunInTxBeginDeadlineOnAMasterFoundUnwell(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, addr := hangingManager(t, ctx)

	rctx := newFiredCtx()
	runs := 0
	errc := make(chan error, 1)
	go func() {
		opts := failover.Options{TxOptions: pgx.TxOptions{BeginQuery: "BEGIN /* pgxha_test_hang */"}}
		errc <- failover.RunInTx(rctx, m, opts, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			return nil
		})
	}()
	waitUnwell(t, ctx, m)
	rctx.fire()
	err := <-errc
	require.Error(t, err)
	t.Logf("RunInTx: %v", err)
	require.Zero(t, runs)
	var le *hasql.NodeLostError
	require.True(t, errors.As(err, &le), "RunInTx's BEGIN ended by its deadline on a master found unwell: want a *NodeLostError, got %T: %v", err, err)
	require.Equal(t, addr, le.Addr)
	require.False(t, le.MayHaveRun, "BEGIN: nothing may have run")
	require.False(t, le.Autocommit, "BEGIN: nothing may have committed")
	require.NotEqual(t, failover.CommitUnknown, failover.Classify(le))
}

// TestCloseAfterADeadlineOnAHungMaster: a statement on the master is ended
// by its deadline while the master hangs, and its connection released. The
// Manager's Close gives the statement's cancel request and pgx's goodbye
// to the server up to the check timeout (200 ms here): pgx reads a closed
// connection until the server ends it, for up to 15 s, and Close waited in
// pgxpool's Close for that, though the statement had a deadline (as Close's
// documentation asks) and was over.
func TestCloseAfterADeadlineOnAHungMaster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, _ := hangingManager(t, ctx)

	sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := m.Master().Exec(sctx, "SELECT pgxha_test_hang()")
	scancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	start := time.Now()
	m.Close()
	took := time.Since(start)
	t.Logf("Close took %s", took)
	require.Less(t, took, 5*time.Second, "Close waited for pgx's drain of a connection its statement's deadline ended, on the hung master")
}
