// Package chaos runs a write and read load against a cluster while a fault
// happens, records every operation, and checks what happened: which writes
// were acknowledged, whether all of them survived, how long writes were out.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Table is the table the load writes to; CreateTable makes it.
const Table = "chaos_writes"

// CreateTable creates the load's table through q (a master connection).
func CreateTable(ctx context.Context, q interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}) error {
	_, err := q.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+Table+` (
		client text NOT NULL, writer int NOT NULL, seq int NOT NULL,
		node text NOT NULL DEFAULT current_setting('cluster_name'),
		at timestamptz NOT NULL DEFAULT clock_timestamp(),
		PRIMARY KEY (client, writer, seq))`)
	return err
}

// InsertSQL inserts one numbered row; its arguments are client, writer, seq.
const InsertSQL = "INSERT INTO " + Table + " (client, writer, seq) VALUES ($1, $2, $3)"

// ReadSQL reads the latest row of a writer; its arguments are client, writer.
const ReadSQL = "SELECT coalesce(max(seq), 0) FROM " + Table + " WHERE client = $1 AND writer = $2"

// Client is what the load drives: a library under test.
type Client interface {
	// Write inserts row (writer, seq) and returns once the master
	// acknowledged the commit.
	Write(ctx context.Context, writer, seq int) error
	// Read runs one read.
	Read(ctx context.Context, reader int) error
}

// Config shapes a load.
type Config struct {
	Writers int
	Readers int
	// OpTimeout bounds each operation (default 5s).
	OpTimeout time.Duration
	// RetryPause is the pause after a failed operation before the next one
	// (default 5ms), as an application that retries at once would do, give
	// or take.
	RetryPause time.Duration
}

// Op is one operation.
type Op struct {
	Start, End time.Time
	Worker     int
	Seq        int // writes only
	Err        error
}

// Key names a written row.
type Key struct{ Writer, Seq int }

// Load is a running load. Its goroutines stop on Stop.
type Load struct {
	cfg    Config
	client Client
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	writes []Op
	reads  []Op
}

// Start starts cfg.Writers writers and cfg.Readers readers. Each writer
// writes rows 1, 2, 3, ... in order, a new number for every attempt.
func Start(client Client, cfg Config) *Load {
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 5 * time.Second
	}
	if cfg.RetryPause <= 0 {
		cfg.RetryPause = 5 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{cfg: cfg, client: client, cancel: cancel}
	for w := 0; w < cfg.Writers; w++ {
		l.wg.Add(1)
		go l.run(ctx, w, true)
	}
	for r := 0; r < cfg.Readers; r++ {
		l.wg.Add(1)
		go l.run(ctx, r, false)
	}
	return l
}

func (l *Load) run(ctx context.Context, worker int, write bool) {
	defer l.wg.Done()
	pause := time.NewTimer(0)
	defer pause.Stop()
	<-pause.C
	for seq := 1; ctx.Err() == nil; seq++ {
		opCtx, cancel := context.WithTimeout(ctx, l.cfg.OpTimeout)
		op := Op{Start: time.Now(), Worker: worker, Seq: seq}
		if write {
			op.Err = l.client.Write(opCtx, worker, seq)
		} else {
			op.Err = l.client.Read(opCtx, worker)
		}
		op.End = time.Now()
		cancel()
		if ctx.Err() != nil && op.Err != nil {
			return // stopped, not failed
		}
		l.mu.Lock()
		if write {
			l.writes = append(l.writes, op)
		} else {
			l.reads = append(l.reads, op)
		}
		l.mu.Unlock()
		if op.Err != nil {
			pause.Reset(l.cfg.RetryPause)
			select {
			case <-ctx.Done():
				return
			case <-pause.C:
			}
		}
	}
}

// WaitWrites waits until n more writes were acknowledged than when it was
// called, or ctx ends.
func (l *Load) WaitWrites(ctx context.Context, n int) error {
	start := l.acked()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for l.acked() < start+n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d acknowledged writes: %w (got %d)", n, ctx.Err(), l.acked()-start)
		case <-tick.C:
		}
	}
	return nil
}

// WaitReads is WaitWrites for reads.
func (l *Load) WaitReads(ctx context.Context, n int) error {
	count := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		k := 0
		for _, op := range l.reads {
			if op.Err == nil {
				k++
			}
		}
		return k
	}
	start := count()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for count() < start+n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d reads: %w (got %d)", n, ctx.Err(), count()-start)
		case <-tick.C:
		}
	}
	return nil
}

func (l *Load) acked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := 0
	for _, op := range l.writes {
		if op.Err == nil {
			k++
		}
	}
	return k
}

// Stop stops the load, waits for its goroutines and returns what happened.
func (l *Load) Stop() *Result {
	l.cancel()
	l.wg.Wait()
	return l.Snapshot()
}

// Snapshot returns what happened so far; the load goes on.
func (l *Load) Snapshot() *Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := &Result{Writes: append([]Op(nil), l.writes...), Reads: append([]Op(nil), l.reads...)}
	sort.Slice(r.Writes, func(i, j int) bool { return r.Writes[i].End.Before(r.Writes[j].End) })
	sort.Slice(r.Reads, func(i, j int) bool { return r.Reads[i].End.Before(r.Reads[j].End) })
	return r
}

// Result is every operation of a load.
type Result struct {
	Writes []Op
	Reads  []Op
}

// Acked returns the acknowledged writes.
func (r *Result) Acked() []Key {
	var keys []Key
	for _, op := range r.Writes {
		if op.Err == nil {
			keys = append(keys, Key{op.Worker, op.Seq})
		}
	}
	return keys
}

// WriteErrors and ReadErrors return the failed operations.
func (r *Result) WriteErrors() []Op { return failed(r.Writes) }

// ReadErrors returns the failed reads.
func (r *Result) ReadErrors() []Op { return failed(r.Reads) }

func failed(ops []Op) []Op {
	var out []Op
	for _, op := range ops {
		if op.Err != nil {
			out = append(out, op)
		}
	}
	return out
}

// AckedAfter counts writes acknowledged that started at or after t.
func (r *Result) AckedAfter(t time.Time) int {
	k := 0
	for _, op := range r.Writes {
		if op.Err == nil && !op.Start.Before(t) {
			k++
		}
	}
	return k
}

// ReadsAfter counts successful reads that started at or after t.
func (r *Result) ReadsAfter(t time.Time) int {
	k := 0
	for _, op := range r.Reads {
		if op.Err == nil && !op.Start.Before(t) {
			k++
		}
	}
	return k
}

// FirstAckAfter returns when the first write acknowledged after t was
// acknowledged, and whether there was one.
func (r *Result) FirstAckAfter(t time.Time) (time.Time, bool) {
	for _, op := range r.Writes {
		if op.Err == nil && op.End.After(t) {
			return op.End, true
		}
	}
	return time.Time{}, false
}

// Outage is the write outage the application saw for a fault at t: from t
// to the first acknowledgement of a write that started at or after t. ok is
// false when no such write was acknowledged.
func (r *Result) Outage(t time.Time) (d time.Duration, ok bool) {
	for _, op := range r.Writes {
		if op.Err == nil && !op.Start.Before(t) {
			return op.End.Sub(t), true
		}
	}
	return 0, false
}

// LongestGap is the longest time between two successive acknowledgements
// (of any writer) from since on, counting from since itself: the write outage
// the application saw around a fault at since. ok is false when no write was
// acknowledged after after (the writes never recovered).
func (r *Result) LongestGap(since, after time.Time) (d time.Duration, ok bool) {
	prev := since
	for _, op := range r.Writes {
		if op.Err != nil || op.End.Before(since) {
			continue
		}
		d = max(d, op.End.Sub(prev))
		prev = op.End
		if op.End.After(after) {
			ok = true
		}
	}
	return d, ok
}

// HasCode reports whether any failed write met the SQLSTATE code.
func (r *Result) HasCode(code string) bool {
	for _, op := range r.Writes {
		var pgErr *pgconn.PgError
		if errors.As(op.Err, &pgErr) && pgErr.Code == code {
			return true
		}
	}
	return false
}

// Lost returns the acknowledged writes of client that are not in the table
// as conn (a connection to the surviving master) sees it.
func (r *Result) Lost(ctx context.Context, conn *pgx.Conn, client string) ([]Key, error) {
	rows, err := conn.Query(ctx, "SELECT writer, seq FROM "+Table+" WHERE client = $1", client)
	if err != nil {
		return nil, err
	}
	have := map[Key]bool{}
	for rows.Next() {
		var k Key
		if err := rows.Scan(&k.Writer, &k.Seq); err != nil {
			rows.Close()
			return nil, err
		}
		have[k] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var lost []Key
	for _, k := range r.Acked() {
		if !have[k] {
			lost = append(lost, k)
		}
	}
	return lost, nil
}
