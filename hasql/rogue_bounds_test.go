package hasql_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
)

// heapPeak samples the heap every few milliseconds until stop is called,
// which returns the peak HeapAlloc seen and the HeapAlloc before.
func heapPeak() (stop func() (before, peak uint64)) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	var p atomic.Uint64
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			p.Store(max(p.Load(), ms.HeapAlloc))
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() (uint64, uint64) { close(done); <-stopped; return before, p.Load() }
}

// TestRogueWalsenderListIsBounded: a server in the
// discovered set (vouched for by nothing) answers the check as a master
// whose walsender list (one text value, within the 4 MiB message bound) is
// 4 MiB of ';'. The checker sizes its replica slice by the count of ';'
// before it reads a row: ~4 million Replica structs (~430 MiB) per check,
// from a 4 MiB message. A server in the set must not make the Manager
// hold much more than the bounded message (TestRogueHugeMessage allows
// 50 MiB over the heap before).
func TestRogueWalsenderListIsBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	flood := strings.Repeat(";", 4<<20-4096)
	var served atomic.Int64
	rogue := newQueryPG(t, masterAnswers(7000000000000000001, func() string { served.Add(1); return flood }, func(be *pgproto3.Backend) {
		sendRow(be, []uint32{oidInt4, oidText, oidText}, []any{1, "x", "127.0.0.1"})
	}))
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/app?sslmode=disable&hasql_check_interval=100ms", closedPort(t)))
	require.NoError(t, err)
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Discoverer = newSetDiscoverer(discovery.Node{Addr: rogue.Addr()})
	stop := heapPeak()
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	waitUntil(t, ctx, "three walsender lists served", func() bool { return served.Load() >= 3 })
	m.Close()
	before, peak := stop()
	t.Logf("heap before %d MiB, peak %d MiB, walsender lists served %d", before>>20, peak>>20, served.Load())
	assert.Less(t, peak-min(peak, before), uint64(50<<20), "a 4 MiB walsender list from a server nothing vouches for drove the Manager's heap up by %d MiB", (peak-min(peak, before))>>20)
}

// rogueWalsenders starts a server in the discovered set that answers the
// check as a master whose walsender list is list, and the walsender name
// query with rows rows of pids 1 to rows; it returns the Manager and a
// function that reports the rogue node's last check error.
func rogueWalsenders(t *testing.T, ctx context.Context, list string, rows int) (*hasql.Manager, func() error) {
	t.Helper()
	rogue := newQueryPG(t, masterAnswers(7000000000000000002, func() string { return list }, func(be *pgproto3.Backend) {
		fields := []pgproto3.FieldDescription{
			{Name: []byte("pid"), DataTypeOID: oidInt4, DataTypeSize: 4, TypeModifier: -1},
			{Name: []byte("app"), DataTypeOID: oidText, DataTypeSize: -1, TypeModifier: -1},
			{Name: []byte("addr"), DataTypeOID: oidText, DataTypeSize: -1, TypeModifier: -1},
		}
		be.Send(&pgproto3.RowDescription{Fields: fields})
		for i := 1; i <= rows; i++ {
			be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte(fmt.Sprint(i)), []byte("x"), []byte("127.0.0.1")}})
		}
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte(fmt.Sprintf("SELECT %d", rows))})
	}))
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/app?sslmode=disable&hasql_check_interval=100ms", closedPort(t)))
	require.NoError(t, err)
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Discoverer = newSetDiscoverer(discovery.Node{Addr: rogue.Addr()})
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m, func() error {
		for _, st := range m.Nodes() {
			if st.Addr == rogue.Addr() {
				return st.LastError
			}
		}
		return nil
	}
}

// TestRogueWalsenderNamesAreBounded: a server in the discovered set that
// claims 300,000 walsenders (pid 0 each; 2.1 MiB, within the message
// bound) and answers the walsender name query with 150,000 rows of other
// pids made the checker drop each named pid not in the list with a linear
// search of the list: 4.5e10 comparisons, with no look at the check's
// context, a core busy for many seconds past CheckTimeout, and Close
// waiting for it. Such a list is now the check's error (more walsenders
// than checker.MaxWalsenders); and within the bound, more name rows than
// walsenders can exist end the check too.
func TestRogueWalsenderNamesAreBounded(t *testing.T) {
	t.Run("walsenders", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, lastErr := rogueWalsenders(t, ctx, strings.TrimSuffix(strings.Repeat("||||||;", 300_000), ";"), 150_000)
		waitUntil(t, ctx, "the rogue's check fails on its walsender count", func() bool {
			err := lastErr()
			return err != nil && strings.Contains(err.Error(), "more than 4096")
		})
	})
	t.Run("names", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, lastErr := rogueWalsenders(t, ctx, "1||||||", 10_000)
		waitUntil(t, ctx, "the rogue's check fails on its walsender name rows", func() bool {
			err := lastErr()
			return err != nil && strings.Contains(err.Error(), "more than 4096 rows")
		})
	})
}
