//go:build linux

package hasql_test

import (
	"context"
	"database/sql/driver"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

type panicScanner struct{}

func (*panicScanner) Scan(any) error { panic("the caller's Scanner panics") }

type panicValuer struct{}

func (panicValuer) Value() (driver.Value, error) { panic("the caller's Valuer panics") }

// A panic in the caller's code inside a routed call (a driver.Valuer
// argument, a sql.Scanner destination), recovered as net/http recovers a
// handler's, gives the connection back to its pool, as pgxpool's own Exec
// and Row do: kept, it counted as in use for good (least_busy and p2c shun
// the node), a few of them drained the pool, and Close waited for ever.
func TestQuerierReleasesOnPanic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	// Not newManager: its cleanup would wait for ever in Close on a kept
	// connection; the test closes it with a bound.
	m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_balancer", "least_busy"), hasql.WithLogger(quiet))
	require.NoError(t, err)
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	_, err = m.Master().Exec(ctx, "CREATE TABLE pt (v text)")
	require.NoError(t, err)
	panics := func(f func()) (r any) {
		defer func() { r = recover() }()
		f()
		return nil
	}
	b := &pgx.Batch{}
	b.Queue("INSERT INTO pt VALUES ($1)", panicValuer{})
	for name, f := range map[string]func(){
		"QueryRow.Scan": func() { _ = m.Replica().QueryRow(ctx, "SELECT 1").Scan(&panicScanner{}) },
		"Exec":          func() { _, _ = m.Master().Exec(ctx, "INSERT INTO pt VALUES ($1)", panicValuer{}) },
		"ExecToken":     func() { _, _, _ = m.Master().ExecToken(ctx, "INSERT INTO pt VALUES ($1)", panicValuer{}) },
		"Query":         func() { _, _ = m.Replica().Query(ctx, "SELECT $1::text", panicValuer{}) },
		"SendBatch":     func() { _ = m.Master().SendBatch(ctx, b).Close() },
	} {
		require.NotNil(t, panics(f), name)
	}
	acquired := func() (n int32) {
		for _, st := range m.Stat().Nodes {
			n += st.Pool.AcquiredConns
		}
		return n
	}
	assert.Eventually(t, func() bool { return acquired() == 0 && inUseTotal(t, m) == 0 }, 10*time.Second, 10*time.Millisecond,
		"connections kept: %d acquired, in use %v", acquired(), hasql.InUse(m))
	closed := make(chan struct{})
	go func() { m.Close(); close(closed) }()
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("Close waits for a connection nobody holds")
	}
}
