package failover_test

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// The unnamed statement is kept across writes as the SQL of the Parses of
// it the wire showed. A Parse the server skips (after an error earlier in
// the same Sync, the extended protocol discards every message up to the
// Sync) changes nothing on the server: a later Bind of the unnamed
// statement runs the statement parsed before (COMMIT AND CHAIN). Read as
// the skipped one (SELECT 1), fn's write committed, the serialization
// failure after it was retried, and the write committed twice; it reads
// as either now.
func TestRunInTxUnnamedParseSkippedByTheServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 0})
	m := preparedManager(t, ctx, c, 0, nil, nil, "CREATE TABLE unnamed_t (n serial PRIMARY KEY, note text)")
	count := func(t *testing.T, note string) int {
		var k int
		require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM unnamed_t WHERE note = $1", note).Scan(&k))
		return k
	}

	run := func(t *testing.T, note string, skip bool, first, second string) {
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if _, err := tx.Exec(ctx, "INSERT INTO unnamed_t (note) VALUES ($1)", note); err != nil {
				return err
			}
			if runs > 1 {
				return nil
			}
			pg := tx.Conn().PgConn()
			if _, err := tx.Exec(ctx, "SAVEPOINT fn_sp"); err != nil {
				return err
			}
			// Prepared while the transaction is well (a ROLLBACK TO is
			// allowed in a failed one).
			if _, err := pg.Prepare(ctx, "fn rollback to "+note, "ROLLBACK TO SAVEPOINT fn_sp", nil); err != nil {
				return err
			}
			// The unnamed statement: first (read as such).
			if _, err := pg.Prepare(ctx, "", first, nil); err != nil {
				return err
			}
			// One Sync: a Parse the server refuses, then a Parse of the
			// unnamed statement, which the server skips.
			p := pg.StartPipeline(ctx)
			if skip {
				p.SendPrepare("fn bad "+note, "SELEC 1", nil)
			}
			p.SendPrepare("", second, nil)
			if err := p.Sync(); err != nil {
				p.Close()
				return err
			}
			perr := p.Close()
			t.Logf("pipeline: %v", perr)
			if skip && perr == nil {
				return errors.New("the bad Parse was accepted")
			}
			if skip {
				if _, err := pg.ExecPrepared(ctx, "fn rollback to "+note, nil, nil, nil).Close(); err != nil {
					return err
				}
			}
			// Runs the server's unnamed statement.
			res, err := pg.ExecPrepared(ctx, "", nil, nil, nil).Close()
			t.Logf("ExecPrepared(\"\"): tag %q, %v", res.String(), err)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, raise40001)
			return err
		})
		k := count(t, note)
		t.Logf("RunInTx: %v; runs %d; rows committed %d", err, runs, k)
		switch {
		case skip:
			assert.Equal(t, 1, runs, "fn ran again after its work committed")
			assert.Equal(t, 1, k, "fn's write committed twice")
		default:
			// Control: the Parse ran, the unnamed statement is SELECT 1,
			// nothing committed before RunInTx's COMMIT: retried once.
			assert.NoError(t, err)
			assert.Equal(t, 2, runs)
			assert.Equal(t, 1, k)
		}
	}
	t.Run("control: Parse run", func(t *testing.T) { run(t, "parse-run", false, "COMMIT AND CHAIN", "SELECT 1") })
	t.Run("Parse skipped after an error", func(t *testing.T) { run(t, "parse-skipped", true, "COMMIT AND CHAIN", "SELECT 1") })
}

// killingSource yields one row, then SIGKILLs the backend (no FATAL is
// sent: the connection just ends, as on a crash or a reset) and ends once
// the backend has exited: CopyDone then meets a closed connection.
type killingSource struct {
	t    *testing.T
	ctx  context.Context
	pid  uint32
	n    int
	kill func()
}

func (s *killingSource) Next() bool {
	s.n++
	if s.n == 2 {
		s.kill()
		waitExited(s.t, s.ctx, s.pid)
		return false
	}
	return s.n == 1
}
func (s *killingSource) Values() ([]any, error) { return []any{"copied"}, nil }
func (s *killingSource) Err() error             { return nil }

// waitExited waits until process pid no longer exists (the postmaster
// reaps a killed backend at once).
func waitExited(t *testing.T, ctx context.Context, pid uint32) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for syscall.Kill(int(pid), 0) == nil {
		select {
		case <-ctx.Done():
			t.Errorf("backend %d still runs: %v", pid, ctx.Err())
			return
		case <-tick.C:
		}
	}
}

// waitRunning waits until backend pid runs a statement that contains what.
func waitRunning(t *testing.T, ctx context.Context, m *hasql.Manager, pid uint32, what string) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		var n int
		err := m.Master().QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND strpos(query, $2) > 0", pid, what).Scan(&n)
		if err != nil || n > 0 {
			if err != nil {
				t.Errorf("waiting for backend %d to run %q: %v", pid, what, err)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("backend %d never ran %q: %v", pid, what, ctx.Err())
			return
		case <-tick.C:
		}
	}
}

// Under TLS, a connection closed by pgconn without a Terminate and without
// a FATAL error (CopyFrom whose connection ends mid-copy: pgconn closes the
// net.Conn straight away) writes TLS's close alert past the frontend: it
// is no statement (it was taken for a possible COMMIT). The backend dies
// before any COMMIT (nothing committed): fn runs again.
func TestRunInTxCopyLostUnderTLSIsRetried(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name string
		tls  bool
		copy bool
	}{
		{"control: no TLS, CopyFrom", false, true},
		{"control: TLS, pg_sleep", true, false},
		{"TLS, CopyFrom", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := oneNodeManager(t, ctx, tc.tls, "CREATE TABLE killed_t (n serial PRIMARY KEY, note text)")
			var classes []failover.Class
			opts := failover.Options{MaxAttempts: 10, OnRetry: func(_ int, err error, c failover.Class, _ time.Duration) {
				t.Logf("retry after %v (%v)", err, c)
				classes = append(classes, c)
			}}
			var killer sync.WaitGroup
			runs, err := insertThen(t, ctx, m, opts, tc.tls, "killed_t", "row", func(ctx context.Context, tx pgx.Tx, runs int) error {
				if runs > 1 {
					return nil
				}
				pid := tx.Conn().PgConn().PID()
				kill := func() {
					if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
						t.Errorf("kill %d: %v", pid, err)
					}
				}
				if tc.copy {
					_, err := tx.CopyFrom(ctx, pgx.Identifier{"killed_t"}, []string{"note"}, &killingSource{t: t, ctx: ctx, pid: pid, kill: kill})
					t.Logf("CopyFrom: %v", err)
					return err
				}
				killer.Add(1)
				go func() {
					defer killer.Done()
					waitRunning(t, ctx, m, pid, "pg_sleep")
					kill()
				}()
				_, err := tx.Exec(ctx, "SELECT pg_sleep(60)")
				t.Logf("pg_sleep: %v", err)
				return err
			})
			killer.Wait()
			t.Logf("classes %v", classes)
			assert.NoError(t, err, "nothing committed before the loss: fn should run again")
			assert.Equal(t, 2, runs, "a loss before any COMMIT was not retried")
			assert.Equal(t, 1, countNote(t, ctx, m, "killed_t", "row"))
		})
	}
}

// Under TLS, what pgconn's ExecBatch writes is taken for a possible COMMIT
// unless pgx's tracer read it as a batch. A statement pgx traced as begun
// but never sent nor ended (pgx's CopyFrom whose statement description
// fails: TraceCopyFromStart without TraceCopyFromEnd) does not hide fn's
// own ExecBatch (taken for that statement's message, its COMMIT AND CHAIN
// was skipped, the serialization failure after it retried, and the write
// committed twice).
func TestRunInTxExecBatchUnderTLSAfterAnUnsentCopyFrom(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name     string
		tls      bool
		copyDone bool
	}{
		{"control: TLS, ExecBatch alone", true, false},
		{"control: no TLS, after a CopyFrom never sent", false, true},
		{"TLS, after a CopyFrom never sent", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := oneNodeManager(t, ctx, tc.tls, "CREATE TABLE eb_t (n serial PRIMARY KEY, note text)")
			runs, _ := insertThen(t, ctx, m, failover.Options{MaxAttempts: 3}, tc.tls, "eb_t", "row", func(ctx context.Context, tx pgx.Tx, runs int) error {
				if runs > 1 {
					return nil
				}
				if tc.copyDone {
					done, cancel := context.WithCancel(ctx)
					cancel()
					_, err := tx.CopyFrom(done, pgx.Identifier{"eb_t"}, []string{"note"}, pgx.CopyFromRows([][]any{{"x"}}))
					t.Logf("CopyFrom under a done context: %v", err)
					if err == nil {
						return errors.New("CopyFrom under a done context ran")
					}
				}
				b := &pgconn.Batch{}
				b.ExecParams("COMMIT AND CHAIN", nil, nil, nil, nil)
				if _, err := tx.Conn().PgConn().ExecBatch(ctx, b).ReadAll(); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, raise40001)
				return err
			})
			assert.Equal(t, 1, runs, "fn ran again after its work committed")
			assert.Equal(t, 1, countNote(t, ctx, m, "eb_t", "row"), "fn's write committed twice")
		})
	}
}
