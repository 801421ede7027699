package hasql_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/pgxha/pgxha/hasql"
)

// New makes a Manager from one connection string naming every node. It
// returns once every node has been checked once; nodes that are down do not
// make it fail.
func ExampleNew() {
	ctx := context.Background()
	m, err := hasql.New(ctx, "postgres://app:secret@db1:5432,db2:5432,db3:5432/app?hasql_max_lag=5s")
	if err != nil {
		log.Fatal(err) // a connection string it cannot use
	}
	defer m.Close()

	// At start-up, wait for a master and a replica, with a bound: the
	// error says which node is missing and why.
	readyCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := m.WaitReady(readyCtx, 1, 1); err != nil {
		log.Fatal(err)
	}
}

// ParseConfig reads the connection string and pgxha's hasql_* settings,
// which never reach the server; bad input gets an error naming the setting.
func ExampleParseConfig() {
	cfg, err := hasql.ParseConfig("postgres://app:secret@db1:5432,db2:5433/app?hasql_check_interval=250ms&hasql_max_lag=5s")
	if err != nil {
		log.Fatal(err)
	}
	for _, n := range cfg.Nodes {
		fmt.Println(n.Addr)
	}
	fmt.Println(cfg.CheckInterval, cfg.MaxLag)

	_, err = hasql.ParseConfig("postgres://app:secret@db1,db2/app?hasql_check_interval=often")
	fmt.Println(err != nil)
	// Output:
	// db1:5432
	// db2:5433
	// 250ms 5s
	// true
}

// Master routes each call to the master, the way a pgxpool.Pool is used.
// While there is none (a failover under way) the call waits for one until
// its context ends.
func ExampleManager_Master() {
	var m *hasql.Manager // from hasql.New
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := m.Master().Exec(ctx, "INSERT INTO events (kind) VALUES ($1)", "signup")
	switch {
	case errors.Is(err, hasql.ErrNoMaster):
		// No master before ctx ended: the statement did not run.
	case err != nil:
		// The statement failed, or its connection was lost: it may have run.
	}
}

// Replica routes each call to a replica chosen by the options, here one at
// most 5 seconds behind the master, or the master when none qualifies.
func ExampleManager_Replica() {
	var m *hasql.Manager // from hasql.New
	ctx := context.Background()
	var n int64
	err := m.Replica(hasql.MaxLag(0, 5*time.Second), hasql.FallbackToMaster()).
		QueryRow(ctx, "SELECT count(*) FROM events").Scan(&n)
	if err != nil {
		log.Print(err)
	}
}

// AcquireMaster hands out a connection to the master for several
// statements; release it when done.
func ExampleManager_AcquireMaster() {
	var m *hasql.Manager // from hasql.New
	ctx := context.Background()
	conn, err := m.AcquireMaster(ctx)
	if err != nil {
		log.Print(err) // a *hasql.NoNodeError when there was no master until ctx ended
		return
	}
	defer conn.Release()
	// Session state, such as an advisory lock, stays on this connection.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(42)"); err != nil {
		log.Print(err)
		return
	}
	defer conn.Exec(ctx, "SELECT pg_advisory_unlock(42)")
}

// AcquireReplica with SyncOnly takes only a replica the master waits for on
// every commit: it has every acknowledged write once replayed.
func ExampleManager_AcquireReplica() {
	var m *hasql.Manager // from hasql.New
	ctx := context.Background()
	conn, err := m.AcquireReplica(ctx, hasql.SyncOnly())
	if err != nil {
		log.Print(err)
		return
	}
	defer conn.Release()
}

// Read your writes: commit, take the master's WAL position, and read from a
// replica that has replayed it (or the master after MinLSNWait).
func ExampleCommitLSN() {
	var m *hasql.Manager // from hasql.New
	ctx := context.Background()
	tx, err := m.Master().Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO notes (body) VALUES ('hello')"); err != nil {
		tx.Rollback(ctx)
		log.Fatal(err)
	}
	lsn, err := hasql.CommitLSN(ctx, tx)
	if err != nil {
		log.Fatal(err)
	}
	var body string
	err = m.Replica(hasql.MinLSN(lsn), hasql.FallbackToMaster(), hasql.MinLSNWait(200*time.Millisecond)).
		QueryRow(ctx, "SELECT body FROM notes ORDER BY id DESC LIMIT 1").Scan(&body)
	if err != nil {
		log.Fatal(err)
	}
}

// Nodes is the Manager's view of every node, in connection string order.
func ExampleManager_Nodes() {
	var m *hasql.Manager // from hasql.New
	for _, n := range m.Nodes() {
		fmt.Println(n.Addr, n.Role, n.LagBytes, n.Lag, n.LastError)
	}
}
