package failover_test

// Each subtest is an fn that ends RunInTx's transaction itself in a way
// that takes more than a look at fn's calls to see (a savepoint's
// statement, a prepared statement's name, quoting PostgreSQL reads its own
// way, a commit and a chained transaction), on one cluster with a
// synchronous standby. The loss of a
// COMMIT's answer is made as in fn_commit_test.go: the standby stops
// receiving WAL, the COMMIT writes its record and waits in SyncRep, and
// pg_terminate_backend of the waiter commits it locally and closes the
// connection without an answer.

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

func TestRunInTxFnEndsTheTransaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1, SyncReplicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	tr := &stmtEndTracer{}
	// A statement the application prepares on every connection (a
	// common pgx pattern): here, its COMMIT.
	m := preparedManager(t, ctx, c, 1, tr, [][2]string{{"app_commit", "COMMIT"}},
		"CREATE TABLE ends_t (n serial PRIMARY KEY, note text)")

	stop, restore := streamStopper(t, ctx, n2)
	count := func(t *testing.T, note string) int {
		var k int
		require.NoError(t, m.Master().QueryRow(ctx, "SELECT count(*) FROM ends_t WHERE note LIKE $1", note+"%").Scan(&k))
		return k
	}

	// commitLost runs fn in RunInTx while the first COMMIT to wait in
	// SyncRep is terminated (committed, answer lost).
	commitLost := func(t *testing.T, note string, commit func(ctx context.Context, tx pgx.Tx) error) {
		stop(t)
		var killed atomic.Int32
		tctx, tcancel := context.WithCancel(ctx)
		defer tcancel()
		done := terminateSyncWaiters(t, tctx, n1, 1, &killed, restore)
		runs := 0
		var classes []failover.Class
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3, OnRetry: func(_ int, _ error, c failover.Class, _ time.Duration) {
			classes = append(classes, c)
		}}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if _, err := tx.Exec(ctx, "INSERT INTO ends_t (note) VALUES ($1)", note); err != nil {
				return err
			}
			return commit(ctx, tx)
		})
		// The terminator ends once it caught the COMMIT; a COMMIT that
		// never waited in SyncRep would leave it looking until ctx ends.
		select {
		case <-done:
		case <-time.After(time.Minute):
			tcancel()
			<-done
			t.Errorf("RunInTx returned (%v, %d runs) and no backend waited in SyncRep within a minute", err, runs)
		}
		k := count(t, note)
		t.Logf("RunInTx: %v; runs %d; retried as %v; rows committed %d; terminated %d", err, runs, classes, k, killed.Load())
		require.EqualValues(t, 1, killed.Load())
		assert.Equal(t, 1, runs, "fn ran again after its own COMMIT committed (answer lost)")
		assert.Equal(t, 1, k, "the write committed more than once")
		assert.ErrorIs(t, err, failover.ErrCommitUnknown)
	}

	t.Run("savepoint Exec COMMIT lost", func(t *testing.T) {
		commitLost(t, "savepoint", func(ctx context.Context, tx pgx.Tx) error {
			sp, err := tx.Begin(ctx) // or pgx.BeginFunc(ctx, tx, ...)
			if err != nil {
				return err
			}
			_, err = sp.Exec(ctx, "COMMIT")
			return err
		})
	})
	t.Run("prepared COMMIT by name lost", func(t *testing.T) {
		commitLost(t, "prepared", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "app_commit")
			return err
		})
	})
	t.Run("pgx.BeginFunc savepoint Exec COMMIT lost", func(t *testing.T) {
		commitLost(t, "beginfunc", func(ctx context.Context, tx pgx.Tx) error {
			return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
				_, err := sp.Exec(ctx, "COMMIT")
				return err
			})
		})
	})
	// A COMMIT sent through tx.Conn(), past the wrapper: seen on the
	// connection itself (it ran fn again and wrote twice).
	t.Run("tx.Conn() Exec COMMIT lost", func(t *testing.T) {
		commitLost(t, "txconn", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Conn().Exec(ctx, "COMMIT")
			return err
		})
	})
	// Past pgx: statements fn sends through tx.Conn().PgConn() are read
	// from the wire (a prepared statement pgx did not prepare reads as a
	// possible COMMIT).
	t.Run("PgConn Exec COMMIT lost", func(t *testing.T) {
		commitLost(t, "pgexec", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Conn().PgConn().Exec(ctx, "SELECT 1; COMMIT").ReadAll()
			return err
		})
	})
	t.Run("PgConn ExecParams COMMIT lost", func(t *testing.T) {
		commitLost(t, "pgparams", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Conn().PgConn().ExecParams(ctx, "COMMIT", nil, nil, nil, nil).Close()
			return err
		})
	})
	t.Run("PgConn Prepare and ExecPrepared COMMIT lost", func(t *testing.T) {
		commitLost(t, "pgprep", func(ctx context.Context, tx pgx.Tx) error {
			pg := tx.Conn().PgConn()
			if _, err := pg.Prepare(ctx, "fn pg commit", "COMMIT", nil); err != nil {
				return err
			}
			_, err := pg.ExecPrepared(ctx, "fn pg commit", nil, nil, nil).Close()
			return err
		})
	})
	t.Run("PgConn Prepare and ExecPrepared of the unnamed statement COMMIT lost", func(t *testing.T) {
		commitLost(t, "pgunnamed", func(ctx context.Context, tx pgx.Tx) error {
			pg := tx.Conn().PgConn()
			if _, err := pg.Prepare(ctx, "", "COMMIT", nil); err != nil {
				return err
			}
			_, err := pg.ExecPrepared(ctx, "", nil, nil, nil).Close()
			return err
		})
	})
	t.Run("PgConn COMMIT after a traced statement that was never sent", func(t *testing.T) {
		commitLost(t, "pgafter", func(ctx context.Context, tx pgx.Tx) error {
			done, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := tx.Exec(done, "SELECT 1"); err == nil {
				return errors.New("a statement under a cancelled context ran")
			}
			_, err := tx.Conn().PgConn().Exec(ctx, "COMMIT").ReadAll()
			return err
		})
	})
	// pgx began a statement it never sent nor ended (CopyFrom whose
	// description failed; pgx v5.8's Exec when dropping invalidated cached
	// statements failed): the next statement on the wire is still read.
	doneCtx := func(ctx context.Context) context.Context {
		d, cancel := context.WithCancel(ctx)
		cancel()
		return d
	}
	t.Run("PgConn COMMIT after a CopyFrom that was never sent", func(t *testing.T) {
		commitLost(t, "copydone", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.CopyFrom(doneCtx(ctx), pgx.Identifier{"ends_t"}, []string{"note"}, pgx.CopyFromRows([][]any{{"x"}}))
			if err == nil {
				return errors.New("CopyFrom under a done context ran")
			}
			_, err = tx.Conn().PgConn().Exec(ctx, "COMMIT").ReadAll()
			return err
		})
	})
	t.Run("PgConn COMMIT after an Exec with an invalidated cached statement", func(t *testing.T) {
		commitLost(t, "dealloc", func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT $1::int", 1); err != nil { // cached
				return err
			}
			if _, err := tx.Exec(doneCtx(ctx), "SELECT $1::int", 1); err == nil { // fails: invalidated
				return errors.New("Exec under a done context ran")
			}
			if _, err := tx.Exec(doneCtx(ctx), "SELECT 2"); err == nil { // the deallocation fails
				return errors.New("Exec under a done context ran")
			}
			_, err := tx.Conn().PgConn().Exec(ctx, "COMMIT").ReadAll()
			return err
		})
	})
	// A name pgx prepared, dropped (pgx's Deallocate, or DEALLOCATE) and
	// prepared again through PgConn: read as what was sent last too.
	for _, tc := range []struct{ name, note, drop string }{
		{"Deallocate", "reprep", ""},
		{"DEALLOCATE", "sqldealloc", "DEALLOCATE"},
		// pgx's Prepare of the name again finds it in pgx's own cache and
		// sends nothing; pgx runs it by name as the server has it.
		{"DEALLOCATE and pgx's Prepare again", "pgxagain", "DEALLOCATE"},
	} {
		t.Run("PgConn COMMIT prepared under a name pgx prepared, after "+tc.name, func(t *testing.T) {
			commitLost(t, tc.note, func(ctx context.Context, tx pgx.Tx) error {
				stmt := "fn_stmt_" + tc.note
				if _, err := tx.Prepare(ctx, stmt, "SELECT 1"); err != nil {
					return err
				}
				if tc.drop == "" {
					if err := tx.Conn().Deallocate(ctx, stmt); err != nil {
						return err
					}
				} else if _, err := tx.Exec(ctx, tc.drop+" "+stmt); err != nil {
					return err
				}
				pg := tx.Conn().PgConn()
				if _, err := pg.Prepare(ctx, stmt, "COMMIT", nil); err != nil {
					return err
				}
				if tc.note == "pgxagain" {
					if _, err := tx.Prepare(ctx, stmt, "SELECT 1"); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, stmt)
					return err
				}
				_, err := pg.ExecPrepared(ctx, stmt, nil, nil, nil).Close()
				return err
			})
		})
	}
	t.Run("PgConn pipeline COMMIT lost", func(t *testing.T) {
		commitLost(t, "pipe", func(ctx context.Context, tx pgx.Tx) error {
			p := tx.Conn().PgConn().StartPipeline(ctx)
			p.SendQueryParams("SELECT 1", nil, nil, nil, nil)
			p.SendQueryParams("COMMIT", nil, nil, nil, nil)
			if err := p.Sync(); err != nil {
				p.Close()
				return err
			}
			return p.Close()
		})
	})
	t.Run("PgConn CopyFrom then COMMIT lost", func(t *testing.T) {
		commitLost(t, "pgcopy", func(ctx context.Context, tx pgx.Tx) error {
			pg := tx.Conn().PgConn()
			if _, err := pg.CopyFrom(ctx, strings.NewReader("pgrows\n"), "COPY ends_t (note) FROM STDIN"); err != nil {
				return err
			}
			_, err := pg.Exec(ctx, "COMMIT").ReadAll()
			return err
		})
	})
	// A statement of each of pgx's ways of sending one, then a PgConn
	// COMMIT lost: the traced statement's own message is not taken for
	// the COMMIT's, nor the COMMIT for it.
	for i, md := range []struct {
		name string
		pre  func(ctx context.Context, tx pgx.Tx) error
	}{
		{"describe exec", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "SELECT $1::int", pgx.QueryExecModeDescribeExec, 1)
			return err
		}},
		{"cache describe", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "SELECT $1::int + 1", pgx.QueryExecModeCacheDescribe, 1)
			return err
		}},
		{"exec", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "SELECT $1::int + 2", pgx.QueryExecModeExec, 1)
			return err
		}},
		{"simple protocol with arguments", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "SELECT $1::text", pgx.QueryExecModeSimpleProtocol, "x'; COMMIT; --")
			return err
		}},
		{"query rows", func(ctx context.Context, tx pgx.Tx) error {
			rows, err := tx.Query(ctx, "SELECT generate_series(1, $1::int)", 3)
			if err != nil {
				return err
			}
			rows.Close()
			return rows.Err()
		}},
		{"batch", func(ctx context.Context, tx pgx.Tx) error {
			b := &pgx.Batch{}
			b.Queue("SELECT $1::int", 1)
			b.Queue("SELECT 2")
			return tx.SendBatch(ctx, b).Close()
		}},
		{"copy", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.CopyFrom(ctx, pgx.Identifier{"ends_t"}, []string{"note"}, pgx.CopyFromRows([][]any{{"copied"}}))
			return err
		}},
		{"savepoint", func(ctx context.Context, tx pgx.Tx) error {
			return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
				_, err := sp.Exec(ctx, "SELECT $1::int", 5)
				return err
			})
		}},
		{"statement cache", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "SELECT $1::int + 7", 1)
			return err
		}},
	} {
		t.Run("PgConn COMMIT lost after a statement sent by "+md.name, func(t *testing.T) {
			commitLost(t, "mode"+string(rune('a'+i)), func(ctx context.Context, tx pgx.Tx) error {
				if err := md.pre(ctx, tx); err != nil {
					return err
				}
				_, err := tx.Conn().PgConn().Exec(ctx, "COMMIT").ReadAll()
				return err
			})
		})
	}
	t.Run("PgConn COMMIT after a cancelled sync wait", func(t *testing.T) {
		stop(t)
		cancelled := cancelSyncWaiter(ctx, n1, restore)
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if _, err := tx.Exec(ctx, "INSERT INTO ends_t (note) VALUES ('pgsync')"); err != nil {
				return err
			}
			_, err := tx.Conn().PgConn().Exec(ctx, "COMMIT").ReadAll()
			return err
		})
		require.NoError(t, <-cancelled)
		t.Logf("RunInTx: %v; runs %d; rows %d", err, runs, count(t, "pgsync"))
		assert.Equal(t, 1, runs)
		assert.ErrorIs(t, err, failover.ErrCommitUnknown, "a commit on the master alone reported as success")
		assert.ErrorIs(t, err, hasql.ErrSyncRepCancelled)
	})
	// A read through PgConn keeps the transaction: a serialization
	// failure after it is retried.
	t.Run("PgConn read then 40001 is retried", func(t *testing.T) {
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if _, err := tx.Exec(ctx, "INSERT INTO ends_t (note) VALUES ('pgread')"); err != nil {
				return err
			}
			pg := tx.Conn().PgConn()
			if _, err := pg.Exec(ctx, "SELECT 'COMMIT'").ReadAll(); err != nil {
				return err
			}
			if _, err := pg.ExecParams(ctx, "SELECT $1::text", [][]byte{[]byte("x")}, nil, nil, nil).Close(); err != nil {
				return err
			}
			// The unnamed statement, prepared and run in two writes.
			if _, err := pg.Prepare(ctx, "", "SELECT 'COMMIT'", nil); err != nil {
				return err
			}
			if _, err := pg.ExecPrepared(ctx, "", nil, nil, nil).Close(); err != nil {
				return err
			}
			if runs == 1 {
				_, err := tx.Exec(ctx, "DO $$BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END$$")
				return err
			}
			return nil
		})
		require.NoError(t, err)
		assert.Equal(t, 2, runs, "a read through PgConn stopped the retry")
		assert.Equal(t, 1, count(t, "pgread"))
	})
	// Controls (fnTx sees these): expected to pass.
	t.Run("control: SendBatch COMMIT lost", func(t *testing.T) {
		commitLost(t, "batch", func(ctx context.Context, tx pgx.Tx) error {
			b := &pgx.Batch{}
			b.Queue("SELECT 1")
			b.Queue("COMMIT")
			return tx.SendBatch(ctx, b).Close()
		})
	})
	t.Run("control: Prepare in fn, Exec by name, lost", func(t *testing.T) {
		commitLost(t, "fnprep", func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Prepare(ctx, "app_commit2", "COMMIT"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "app_commit2")
			return err
		})
	})
	t.Run("COMMIT after a CR-ended comment lost", func(t *testing.T) {
		commitLost(t, "crcomment", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "SELECT 1; -- done\rCOMMIT")
			return err
		})
	})
	t.Run("COMMIT after a continued E string lost", func(t *testing.T) {
		commitLost(t, "econt", func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "SELECT E'a'\n'\\''; COMMIT; --'")
			return err
		})
	})

	// fn commits part of its work and goes on in a new transaction
	// (COMMIT AND CHAIN, or COMMIT then BEGIN, through tx: both seen by
	// fnTx), then meets a serialization failure. The connection is open
	// and not idle, so runOnce takes the ordinary path and retries
	// 40001: fn runs again and the committed part is written twice.
	for _, tc := range []struct {
		name, note string
		end        []string
	}{
		{"COMMIT AND CHAIN then 40001", "chain", []string{"COMMIT AND CHAIN"}},
		{"COMMIT, BEGIN then 40001", "commitbegin", []string{"COMMIT", "BEGIN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runs := 0
			var classes []failover.Class
			err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3, OnRetry: func(_ int, _ error, c failover.Class, _ time.Duration) {
				classes = append(classes, c)
			}}, func(ctx context.Context, tx pgx.Tx) error {
				runs++
				if _, err := tx.Exec(ctx, "INSERT INTO ends_t (note) VALUES ($1)", tc.note); err != nil {
					return err
				}
				for _, s := range tc.end {
					if _, err := tx.Exec(ctx, s); err != nil {
						return err
					}
				}
				if runs == 1 {
					_, err := tx.Exec(ctx, "DO $$BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END$$")
					return err
				}
				return nil
			})
			k := count(t, tc.note)
			t.Logf("RunInTx: %v; runs %d; retried as %v; rows committed %d", err, runs, classes, k)
			assert.Equal(t, 1, runs, "fn ran again after its own COMMIT succeeded")
			assert.Equal(t, 1, k, "the committed part was written twice")
		})
	}

	// fn commits with hasql.CommitToken; the COMMIT's wait for the
	// synchronous standby is cancelled (the warning the control test
	// TestRunInTxSyncWaitCancelledIsCommitUnknown reports as
	// ErrSyncRepCancelled). CommitToken then reads the token on the same
	// connection, which clears the flag: RunInTx reports success for a
	// commit on the master alone.
	t.Run("CommitToken after a cancelled sync wait", func(t *testing.T) {
		stop(t)
		cancelled := cancelSyncWaiter(ctx, n1, restore)
		runs := 0
		var sawCancelled bool
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if _, err := tx.Exec(ctx, "INSERT INTO ends_t (note) VALUES ('token')"); err != nil {
				return err
			}
			conn := tx.Conn()
			if err := tx.Commit(ctx); err != nil {
				return err
			}
			sawCancelled = hasql.SyncRepCancelled(conn)
			// What hasql.CommitToken does after its Commit.
			_, err := m.Token(ctx)
			_ = err
			var lsn string
			return conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn)
		})
		require.NoError(t, <-cancelled)
		t.Logf("RunInTx: %v; runs %d; SyncRepCancelled right after the commit: %v; rows %d", err, runs, sawCancelled, count(t, "token"))
		require.True(t, sawCancelled, "the sync wait was cancelled")
		assert.ErrorIs(t, err, failover.ErrCommitUnknown, "a commit on the master alone reported as success")
		assert.ErrorIs(t, err, hasql.ErrSyncRepCancelled)
	})
	t.Run("hasql.CommitToken after a cancelled sync wait", func(t *testing.T) {
		stop(t)
		cancelled := cancelSyncWaiter(ctx, n1, restore)
		runs := 0
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if _, err := tx.Exec(ctx, "INSERT INTO ends_t (note) VALUES ('ctoken')"); err != nil {
				return err
			}
			tok, err := hasql.CommitToken(ctx, tx)
			t.Logf("CommitToken: %v %v", tok, err)
			return err
		})
		require.NoError(t, <-cancelled)
		t.Logf("RunInTx: %v; runs %d; rows %d", err, runs, count(t, "ctoken"))
		assert.ErrorIs(t, err, failover.ErrCommitUnknown, "a commit on the master alone reported as success")
		assert.ErrorIs(t, err, hasql.ErrSyncRepCancelled)
	})

	// A function with a SQL-standard body ("BEGIN ATOMIC ...; END"):
	// its END reads as a statement that may commit (telling it apart
	// takes PostgreSQL's grammar; reading past it hid real COMMITs, an
	// empty body or a table named begin with a column named atomic). The
	// session is then lost before COMMIT: RunInTx calls it in doubt, runs
	// fn once, and nothing committed twice (a retry lost, at worst).
	t.Run("BEGIN ATOMIC body then loss before COMMIT", func(t *testing.T) {
		var fired atomic.Bool
		hook := func(conn *pgx.Conn, sql string, err error) {
			if err == nil && strings.HasPrefix(sql, "CREATE OR REPLACE FUNCTION app_f") && fired.CompareAndSwap(false, true) {
				terminateAndWait(t, ctx, n1, conn.PgConn().PID())
			}
		}
		tr.hook.Store(&hook)
		runs := 0
		var classes []failover.Class
		err := failover.RunInTx(ctx, m, failover.Options{MaxAttempts: 3, OnRetry: func(_ int, _ error, c failover.Class, _ time.Duration) {
			classes = append(classes, c)
		}}, func(ctx context.Context, tx pgx.Tx) error {
			runs++
			if _, err := tx.Exec(ctx, "CREATE OR REPLACE FUNCTION app_f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO ends_t (note) VALUES ('atomic')")
			return err
		})
		tr.hook.Store(nil)
		require.True(t, fired.Load())
		t.Logf("RunInTx: %v; runs %d; retried as %v; rows %d", err, runs, classes, count(t, "atomic"))
		assert.ErrorIs(t, err, failover.ErrCommitUnknown)
		assert.Equal(t, 1, runs)
		assert.Equal(t, 0, count(t, "atomic"))
	})

	// Outside RunInTx: hasql.CommitLSN commits, then the session ends
	// before the position is read. The write is done, but the error does
	// not unwrap to ErrTokenUnread (unlike CommitToken's): Classify calls
	// it retryable.
	t.Run("CommitLSN position unread: Classify", func(t *testing.T) {
		var fired atomic.Bool
		hook := func(conn *pgx.Conn, sql string, err error) {
			if err == nil && sql == "commit" && fired.CompareAndSwap(false, true) {
				terminateAndWait(t, ctx, n1, conn.PgConn().PID())
			}
		}
		tx, err := m.Master().Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, "INSERT INTO ends_t (note) VALUES ('lsn')")
		require.NoError(t, err)
		tr.hook.Store(&hook)
		_, err = hasql.CommitLSN(ctx, tx)
		tr.hook.Store(nil)
		require.True(t, fired.Load())
		require.Error(t, err)
		require.Equal(t, 1, count(t, "lsn"), "the write committed")
		cl := failover.Classify(err)
		t.Logf("CommitLSN: %v; Classify %v (retryable %v)", err, cl, cl.Retryable())
		assert.False(t, cl.Retryable(), "Classify calls a committed write %v", cl)
	})
}
