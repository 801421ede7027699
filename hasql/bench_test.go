package hasql_test

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// benchEnv is one cluster, one manager and plain pools on the same nodes,
// shared by the benchmarks of a run.
type benchEnv struct {
	c      *testcluster.Cluster
	m      *hasql.Manager
	master *pgxpool.Pool // plain pgxpool on the master
	// master2 is a second plain pgxpool on the master, made like master
	// (BenchmarkAcquireVersus/PlainVsPlain).
	master2 *pgxpool.Pool
	// unaged is a plain pgxpool on the master without MaxConnLifetime,
	// whose test pgxha's pools leave to the node (see
	// BenchmarkAcquireVersus/AcquireMaster-Unaged).
	unaged *pgxpool.Pool
	sync   *pgxpool.Pool // plain pgxpool on the sync replica
	async  *pgxpool.Pool // plain pgxpool on the async replica
}

var (
	benchOnce sync.Once
	bench     *benchEnv
	benchErr  error
)

func env(b *testing.B) *benchEnv {
	b.Helper()
	benchOnce.Do(func() {
		ctx := context.Background()
		c, err := testcluster.Start(ctx, testcluster.Options{})
		if err != nil {
			benchErr = err
			return
		}
		m, err := hasql.New(ctx, withParams(c.DSN(), "pool_max_conns", "8"), hasql.WithLogger(quiet))
		if err != nil {
			benchErr = err
			return
		}
		if err := m.WaitReady(ctx, 1, 2); err != nil {
			benchErr = err
			return
		}
		master, err := pgxpool.New(ctx, withParams(c.Nodes()[0].DSN(), "pool_max_conns", "8"))
		if err != nil {
			benchErr = err
			return
		}
		master2, err := pgxpool.New(ctx, withParams(c.Nodes()[0].DSN(), "pool_max_conns", "8"))
		if err != nil {
			benchErr = err
			return
		}
		pc, err := pgxpool.ParseConfig(withParams(c.Nodes()[0].DSN(), "pool_max_conns", "8"))
		if err != nil {
			benchErr = err
			return
		}
		pc.MaxConnLifetime = 0
		unaged, err := pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			benchErr = err
			return
		}
		syncPool, err := pgxpool.New(ctx, withParams(c.Nodes()[1].DSN(), "pool_max_conns", "8"))
		if err != nil {
			benchErr = err
			return
		}
		asyncPool, err := pgxpool.New(ctx, withParams(c.Nodes()[2].DSN(), "pool_max_conns", "8"))
		if err != nil {
			benchErr = err
			return
		}
		bench = &benchEnv{c: c, m: m, master: master, master2: master2, unaged: unaged, sync: syncPool, async: asyncPool}
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return bench
}

// warm fills a pool so that acquires find idle connections.
func warm(b *testing.B, acquire func(context.Context) (*pgxpool.Conn, error), n int) {
	var conns []*pgxpool.Conn
	for i := 0; i < n; i++ {
		c, err := acquire(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
}

func benchAcquire(b *testing.B, acquire func(context.Context) (*pgxpool.Conn, error)) {
	ctx := context.Background()
	warm(b, acquire, 8)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			c, err := acquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			c.Release()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c, err := acquire(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				c.Release()
			}
		})
	})
}

// BenchmarkAcquire compares an acquire and release through the manager with
// the same on a plain pgxpool on the same node.
func BenchmarkAcquire(b *testing.B) {
	e := env(b)
	b.Run("pgxpool/master", func(b *testing.B) { benchAcquire(b, e.master.Acquire) })
	b.Run("pgxha/AcquireMaster", func(b *testing.B) { benchAcquire(b, e.m.AcquireMaster) })
	b.Run("pgxpool/replica", func(b *testing.B) { benchAcquire(b, e.sync.Acquire) })
	// What AcquireReplica does, by hand: round robin over the replicas' pools.
	var next atomic.Uint64
	replicas := []*pgxpool.Pool{e.sync, e.async}
	b.Run("pgxpool/replicas-round-robin", func(b *testing.B) {
		benchAcquire(b, func(ctx context.Context) (*pgxpool.Conn, error) {
			return replicas[next.Add(1)%2].Acquire(ctx)
		})
	})
	b.Run("pgxha/AcquireReplica", func(b *testing.B) {
		benchAcquire(b, func(ctx context.Context) (*pgxpool.Conn, error) { return e.m.AcquireReplica(ctx) })
	})
	b.Run("pgxha/AcquireReplica-SyncOnly", func(b *testing.B) {
		opt := hasql.SyncOnly()
		benchAcquire(b, func(ctx context.Context) (*pgxpool.Conn, error) { return e.m.AcquireReplica(ctx, opt) })
	})
	b.Run("pgxha/AcquireReplica-PreferMaster", func(b *testing.B) {
		opt := hasql.PreferMaster()
		benchAcquire(b, func(ctx context.Context) (*pgxpool.Conn, error) { return e.m.AcquireReplica(ctx, opt) })
	})
	b.Run("pgxha/AcquireReplica-After", func(b *testing.B) {
		// A token every replica has replayed: the cost of checking it.
		tok, err := e.m.Token(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if err := e.m.WaitReplayed(context.Background(), tok.LSN); err != nil {
			b.Fatal(err)
		}
		opt := hasql.After(tok)
		benchAcquire(b, func(ctx context.Context) (*pgxpool.Conn, error) { return e.m.AcquireReplica(ctx, opt) })
	})
}

// BenchmarkQueryRow compares a routed SELECT 1 with the same on a plain
// pgxpool.
func BenchmarkQueryRow(b *testing.B) {
	e := env(b)
	ctx := context.Background()
	run := func(b *testing.B, q func() error) {
		b.Run("serial", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := q(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := q(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
	b.Run("pgxpool", func(b *testing.B) {
		run(b, func() error { var one int; return e.sync.QueryRow(ctx, "SELECT 1").Scan(&one) })
	})
	replica := e.m.Replica(hasql.SyncOnly())
	b.Run("pgxha/Replica", func(b *testing.B) {
		run(b, func() error { var one int; return replica.QueryRow(ctx, "SELECT 1").Scan(&one) })
	})
}

// BenchmarkAcquireVersus times an acquire and release through the manager
// and the same on plain pgxpools in alternating chunks of one run, so that
// both see the same machine, and reports each side's ns/op and their ratio
// (pgxha/pgxpool), serial and with GOMAXPROCS goroutines.
func BenchmarkAcquireVersus(b *testing.B) {
	e := env(b)
	ctx := context.Background()
	var next atomic.Uint64
	replicas := []*pgxpool.Pool{e.sync, e.async}
	syncOnly := hasql.SyncOnly()
	acquireRelease := func(acquire func(context.Context) (*pgxpool.Conn, error)) func() error {
		return func() error {
			c, err := acquire(ctx)
			if err != nil {
				return err
			}
			c.Release()
			return nil
		}
	}
	for _, tc := range []struct {
		name         string
		plain, pgxha func(context.Context) (*pgxpool.Conn, error)
	}{
		{"AcquireMaster", e.master.Acquire, e.m.AcquireMaster},
		{"AcquireReplica", func(ctx context.Context) (*pgxpool.Conn, error) {
			return replicas[next.Add(1)%2].Acquire(ctx) // round robin by hand
		}, func(ctx context.Context) (*pgxpool.Conn, error) { return e.m.AcquireReplica(ctx) }},
		{"AcquireReplica-SyncOnly", e.sync.Acquire, func(ctx context.Context) (*pgxpool.Conn, error) {
			return e.m.AcquireReplica(ctx, syncOnly)
		}},
		// Both sides plain pools on the master, made alike: what the method
		// reads when there is no difference (its bias and scatter).
		{"PlainVsPlain", e.master.Acquire, e.master2.Acquire},
		// Against a plain pool that does not test MaxConnLifetime either
		// (pgxha's pools leave it to the node, see markExpired): pgxha's
		// own work on the acquire path, without the clock reads it saves.
		{"AcquireMaster-Unaged", e.unaged.Acquire, e.m.AcquireMaster},
	} {
		b.Run(tc.name, func(b *testing.B) {
			warm(b, tc.plain, 8)
			warm(b, tc.pgxha, 8)
			serialAndParallel(b, func(b *testing.B, par int) {
				versus(b, 1000, par, acquireRelease(tc.plain), acquireRelease(tc.pgxha))
			})
		})
	}
}

// BenchmarkQueryRowVersus times SELECT 1 on the sync replica through a
// routed Querier and through a plain pgxpool, in alternating chunks of one
// run; see BenchmarkAcquireVersus.
func BenchmarkQueryRowVersus(b *testing.B) {
	e := env(b)
	ctx := context.Background()
	replica := e.m.Replica(hasql.SyncOnly())
	query := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) func() error {
		return func() error { var one int; return q.QueryRow(ctx, "SELECT 1").Scan(&one) }
	}
	serialAndParallel(b, func(b *testing.B, par int) {
		versus(b, 20, par, query(e.sync), query(replica))
	})
}

// versus runs plain and pgxha b.N times each, in alternating chunks of
// chunk runs, alternating which goes first, and reports both sides' ns/op
// (wall time per run, as b.RunParallel counts it) and their ratio. With par
// above 1, par goroutines share each chunk.
func versus(b *testing.B, chunk, par int, plain, pgxha func() error) {
	var plainTime, pgxhaTime time.Duration
	errs := make(chan error, par)
	timeChunk := func(f func() error, n int) time.Duration {
		start := time.Now()
		if par <= 1 {
			for i := 0; i < n; i++ {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
			return time.Since(start)
		}
		var wg sync.WaitGroup
		for g := 0; g < par; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; i < n; i += par {
					if err := f(); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		d := time.Since(start)
		select {
		case err := <-errs:
			b.Fatal(err)
		default:
		}
		return d
	}
	b.ReportAllocs()
	for done, round := 0, 0; done < b.N; round++ {
		n := min(chunk, b.N-done)
		if round%2 == 0 {
			plainTime += timeChunk(plain, n)
			pgxhaTime += timeChunk(pgxha, n)
		} else {
			pgxhaTime += timeChunk(pgxha, n)
			plainTime += timeChunk(plain, n)
		}
		done += n
	}
	p := float64(plainTime.Nanoseconds()) / float64(b.N)
	h := float64(pgxhaTime.Nanoseconds()) / float64(b.N)
	b.ReportMetric(p, "pgxpool-ns/op")
	b.ReportMetric(h, "pgxha-ns/op")
	b.ReportMetric(h/p, "ratio")
}

// serialAndParallel runs f as sub-benchmarks "serial" (par 1) and
// "parallel" (as many goroutines as GOMAXPROCS).
func serialAndParallel(b *testing.B, f func(b *testing.B, par int)) {
	b.Run("serial", func(b *testing.B) { f(b, 1) })
	b.Run("parallel", func(b *testing.B) { f(b, runtime.GOMAXPROCS(0)) })
}
