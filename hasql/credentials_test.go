package hasql_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
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

// downWatch records every node the Manager ever shows down, until stop.
type downWatch struct {
	mu   sync.Mutex
	down []string
	stop chan struct{}
	done chan struct{}
}

func watchDown(m *hasql.Manager) *downWatch {
	w := &downWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			changed := m.Changed()
			for _, n := range m.Nodes() {
				if !n.Up {
					w.mu.Lock()
					w.down = append(w.down, fmt.Sprintf("%s: %v", n.Addr, n.LastError))
					w.mu.Unlock()
				}
			}
			select {
			case <-changed:
			case <-w.stop:
				return
			}
		}
	}()
	return w
}

func (w *downWatch) end() []string {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.down
}

func TestCredentials(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	// No password from the environment or a passfile of the machine's.
	t.Setenv("PGPASSWORD", "")
	t.Setenv("PGPASSFILE", filepath.Join(t.TempDir(), "none"))

	super, err := c.Master().Conn(ctx)
	require.NoError(t, err)
	defer super.Close(ctx)
	for _, sql := range []string{
		"CREATE ROLE app LOGIN PASSWORD 'first-secret' IN ROLE pg_monitor",
		"CREATE TABLE creds (i int)",
		"GRANT ALL ON creds TO app",
	} {
		_, err := super.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	u, err := url.Parse(c.DSN())
	require.NoError(t, err)
	u.User = url.User("app") // no password
	appDSN := u.String()

	t.Run("a PasswordFunc reaches every connection, through a rotation", func(t *testing.T) {
		var password atomic.Pointer[string]
		first, second := "first-secret", "second-secret"
		password.Store(&first)
		var calls sync.Map // addr → *atomic.Int64
		provider := func(ctx context.Context, n hasql.NodeConfig) (string, error) {
			v, _ := calls.LoadOrStore(n.Addr, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
			return *password.Load(), nil
		}
		m := newManager(t, ctx, withParams(appDSN, "hasql_check_interval", "100ms"), hasql.WithPasswordFunc(provider))
		require.NoError(t, m.WaitReady(ctx, 1, 2), "check connections connect with the provider's password")
		watch := watchDown(m)

		db := m.DB(hasql.TargetMaster)
		defer db.Close()
		l, err := m.Listen(ctx, "creds")
		require.NoError(t, err)
		defer l.Close()

		// The workload: writes, replica reads and database/sql, each
		// counting its successes.
		var writes, reads, sqlOK atomic.Int64
		startWork := func() (stop func()) {
			// Stopped between statements, not by cancelling one: a
			// cancelled statement makes the node checked again at once.
			work := ctx
			var stopping atomic.Bool
			var wg sync.WaitGroup
			for _, f := range []func() error{
				func() error {
					_, err := m.Master().Exec(work, "INSERT INTO creds VALUES (1)")
					return countOK(&writes, err)
				},
				func() error {
					var n int
					return countOK(&reads, m.Replica().QueryRow(work, "SELECT count(*) FROM creds").Scan(&n))
				},
				func() error {
					_, err := db.ExecContext(work, "SELECT pg_notify('creds', 'tick')")
					return countOK(&sqlOK, err)
				},
			} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stopping.Load() && work.Err() == nil {
						if f() != nil {
							time.Sleep(10 * time.Millisecond) // errors are expected while connections are cut
						}
					}
				}()
			}
			return func() { stopping.Store(true); wg.Wait() }
		}

		progress := func(what string) {
			t.Helper()
			w, r, s := writes.Load(), reads.Load(), sqlOK.Load()
			require.Eventually(t, func() bool { return writes.Load() > w+5 && reads.Load() > r+5 && sqlOK.Load() > s+5 },
				time.Minute, 10*time.Millisecond, "%s: writes, replica reads and database/sql go on", what)
			rctx, rcancel := context.WithTimeout(ctx, time.Minute)
			defer rcancel()
			for {
				got, err := l.Receive(rctx)
				if errors.Is(err, hasql.ErrMissed) {
					continue // the listening connection was cut: it listens again
				}
				require.NoError(t, err, "%s: the Listener receives", what)
				if got.Payload == "tick" {
					return
				}
			}
		}
		stopWork := startWork()
		progress("with the first password")

		// Rotate: the role's new password reaches every replica, then the
		// provider hands it out. In between, a node whose copy of the role
		// changed refuses the old password and one that has not yet refuses
		// the new: a secret that rotates in place has that window (a token
		// service's old and new tokens both work for a while). No new work
		// starts during it, so that no connection opens then; the
		// Listener's, database/sql's, the pools' and the check connections
		// stay open through it.
		stopWork()
		_, err = super.Exec(ctx, "ALTER ROLE app PASSWORD 'second-secret'")
		require.NoError(t, err)
		lsn, err := hasql.CurrentLSN(ctx, super)
		require.NoError(t, err)
		for _, n := range c.Replicas() {
			conn, err := n.Conn(ctx)
			require.NoError(t, err)
			require.Eventually(t, func() bool {
				var ok bool
				return conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn.String()).Scan(&ok) == nil && ok
			}, time.Minute, 5*time.Millisecond, "%s replays the new password", n)
			conn.Close(ctx)
		}
		password.Store(&second)
		stopWork = startWork()
		defer stopWork()
		for _, n := range c.Nodes() {
			calls.Store(n.Addr(), new(atomic.Int64))
		}

		// Cut every connection of app on every node, check connections
		// included: each opens again with the second password.
		for _, n := range c.Nodes() {
			conn, err := n.Conn(ctx)
			require.NoError(t, err)
			// Again until a check connection was among those cut: one
			// may be opening again just then.
			checksCut := 0
			for try := 0; checksCut == 0 && try < 100; try++ {
				var all, checks int
				err = conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE application_name = 'pgxha-check')
					FROM (SELECT pg_terminate_backend(pid), application_name FROM pg_stat_activity WHERE usename = 'app') t`).Scan(&all, &checks)
				require.NoError(t, err)
				checksCut += checks
				t.Logf("%s: %d connections of app cut, %d of them check connections", n, all, checks)
				if checks == 0 {
					time.Sleep(20 * time.Millisecond) // the check connection is opening again
				}
			}
			conn.Close(ctx)
			require.Positive(t, checksCut, "%s: its check connection was cut", n)
		}
		progress("with the second password, after every connection was cut")
		require.NoError(t, m.WaitReady(ctx, 1, 2))
		for _, n := range c.Nodes() {
			v, _ := calls.Load(n.Addr())
			assert.Positive(t, v.(*atomic.Int64).Load(), "%s: connections asked the provider after the rotation", n)
		}
		assert.Empty(t, watch.end(), "no node went down")
	})

	t.Run("a BeforeConnect set by ConfigureNode reaches every connection", func(t *testing.T) {
		var calls atomic.Int64
		m := newManager(t, ctx, appDSN, hasql.WithConfigureNode(func(_ hasql.NodeConfig, pc *pgxpool.Config) error {
			pc.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
				calls.Add(1)
				cc.Password = "second-secret"
				return nil
			}
			return nil
		}))
		require.NoError(t, m.WaitReady(ctx, 1, 2), "the check connections")
		l, err := m.Listen(ctx, "creds_hook")
		require.NoError(t, err, "Listen")
		l.Close()
		db := m.DB(hasql.TargetMaster)
		defer db.Close()
		require.NoError(t, db.PingContext(ctx), "database/sql")
		assert.GreaterOrEqual(t, calls.Load(), int64(3+1+1), "the hook ran for checks, Listen and DB")
	})

	t.Run("each node gets the passfile entry of its own host and port", func(t *testing.T) {
		// Entries for n2 and n3, and a wrong one for everything else: n1
		// must fail alone, not lend its entry to the others.
		var lines []string
		for _, n := range c.Nodes()[1:] {
			host, port, _ := strings.Cut(n.Addr(), ":")
			lines = append(lines, fmt.Sprintf("%s:%s:*:app:second-secret", host, port))
		}
		lines = append(lines, "*:*:*:*:wrong")
		passfile := filepath.Join(t.TempDir(), "pgpass")
		require.NoError(t, os.WriteFile(passfile, []byte(strings.Join(lines, "\n")+"\n"), 0o600))

		m := newManager(t, ctx, withParams(appDSN, "passfile", passfile, "hasql_check_interval", "100ms"))
		require.NoError(t, m.WaitReady(ctx, 0, 2), "n2 and n3 connect with their own entries")
		st := m.Nodes()
		assert.False(t, st[0].Up, "n1 has only the wrong entry")
		require.Error(t, st[0].LastError)
		assert.Contains(t, st[0].LastError.Error(), "28P01")
		assert.True(t, st[1].Up && st[2].Up)

		// database/sql and Listen read the same entries.
		db := m.DB(hasql.TargetReplica)
		defer db.Close()
		var one int
		require.NoError(t, db.QueryRowContext(ctx, "SELECT 1").Scan(&one))
	})
}

func countOK(n *atomic.Int64, err error) error {
	if err == nil {
		n.Add(1)
	}
	return err
}
