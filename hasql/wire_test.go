package hasql

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func encodeMessages(t *testing.T, msgs ...pgproto3.FrontendMessage) []byte {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		var err error
		b, err = m.Encode(b)
		require.NoError(t, err)
	}
	return b
}

// readSent reads what a watched connection sends past pgx's tracer.
func TestReadSent(t *testing.T) {
	tc := &trackedConn{}
	tc.prepare("app commit", "COMMIT AND CHAIN")
	var got []string
	f := func(sql string) { got = append(got, sql) }
	tc.watch.Store(&f)
	read := func(p []byte) []string {
		got = nil
		tc.readSent(p)
		return got
	}

	assert.Equal(t, []string{"SELECT 1; COMMIT"}, read(encodeMessages(t, &pgproto3.Query{String: "SELECT 1; COMMIT"})))
	// ExecParams: the unnamed statement parsed before the Bind.
	assert.Equal(t, []string{"INSERT INTO t VALUES ($1)"}, read(encodeMessages(t,
		&pgproto3.Parse{Query: "INSERT INTO t VALUES ($1)"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("1")}},
		&pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{},
		&pgproto3.Sync{})))
	// ExecPrepared: a name pgx prepared, and one nobody did.
	assert.Equal(t, []string{"COMMIT AND CHAIN"}, read(encodeMessages(t, &pgproto3.Bind{PreparedStatement: "app commit"}, &pgproto3.Execute{}, &pgproto3.Sync{})))
	assert.Equal(t, []string{unknownStatement}, read(encodeMessages(t, &pgproto3.Bind{PreparedStatement: "fn stmt"}, &pgproto3.Execute{}, &pgproto3.Sync{})))
	// The unnamed statement of an earlier write (pgconn's Prepare("")
	// then ExecPrepared(""), pgx's describe_exec mode): the one last
	// parsed while watched.
	bindUnnamed := encodeMessages(t, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	assert.Equal(t, []string{"INSERT INTO t VALUES ($1)"}, read(bindUnnamed))
	assert.Empty(t, read(encodeMessages(t, &pgproto3.Parse{Query: "COMMIT"}, &pgproto3.Describe{ObjectType: 'S'}, &pgproto3.Sync{})))
	assert.Equal(t, []string{"COMMIT"}, read(bindUnnamed))
	// A simple query drops it: unknown until parsed again.
	assert.Equal(t, []string{"SELECT 0"}, read(encodeMessages(t, &pgproto3.Query{String: "SELECT 0"})))
	assert.Equal(t, []string{unknownStatement}, read(bindUnnamed))
	assert.Empty(t, read(encodeMessages(t, &pgproto3.Parse{Query: "SELECT 3"}, &pgproto3.Sync{})))
	assert.Equal(t, []string{"SELECT 3"}, read(bindUnnamed))
	// A Parse alone (Prepare) runs nothing, and names its statement for
	// a later Bind; prepared again with other SQL (after a Close, or
	// refused by the server), the name reads as either.
	assert.Empty(t, read(encodeMessages(t, &pgproto3.Parse{Name: "fn stmt", Query: "SELECT 1"}, &pgproto3.Describe{ObjectType: 'S', Name: "fn stmt"}, &pgproto3.Sync{})))
	assert.Equal(t, []string{"SELECT 1"}, read(encodeMessages(t, &pgproto3.Bind{PreparedStatement: "fn stmt"}, &pgproto3.Execute{}, &pgproto3.Sync{})))
	assert.Equal(t, []string{"SELECT 1\n;\nCOMMIT"}, read(encodeMessages(t,
		&pgproto3.Close{ObjectType: 'S', Name: "fn stmt"},
		&pgproto3.Parse{Name: "fn stmt", Query: "COMMIT"},
		&pgproto3.Bind{PreparedStatement: "fn stmt"}, &pgproto3.Execute{}, &pgproto3.Sync{})))
	// pgx's Prepare, once the server accepted it, names one.
	tc.prepare("fn stmt", "SELECT 2")
	assert.Equal(t, []string{"SELECT 2"}, read(encodeMessages(t, &pgproto3.Bind{PreparedStatement: "fn stmt"}, &pgproto3.Execute{})))
	// Two queries in one write: one string, as a batch (see began); copy
	// data is skipped.
	assert.Equal(t, []string{"COPY t FROM STDIN\n;\nSELECT 2"}, read(encodeMessages(t,
		&pgproto3.Query{String: "COPY t FROM STDIN"}, &pgproto3.CopyData{Data: []byte("Q\x00\x00\x00\x05x")}, &pgproto3.CopyDone{},
		&pgproto3.Query{String: "SELECT 2"})))

	// Cut short, or malformed: read as a possible COMMIT, never a panic.
	whole := encodeMessages(t, &pgproto3.Query{String: "SELECT 1"})
	for i := 1; i < len(whole); i++ {
		assert.Equal(t, []string{unknownStatement}, read(whole[:i]), "cut at %d", i)
	}
	assert.Equal(t, []string{unknownStatement}, read([]byte{'Q', 0, 0, 0, 6, 'x', 'y'}), "no NUL")
	assert.Equal(t, []string{unknownStatement}, read([]byte{'B', 0, 0, 0, 5, 0}), "no statement name")
	assert.Equal(t, []string{unknownStatement}, read([]byte{'Q', 0, 0, 0, 2}), "length below 4")
	assert.Empty(t, read(encodeMessages(t, &pgproto3.Sync{}, &pgproto3.Flush{})))

	// A statement the tracer read: given again when the wire shows it;
	// skipped when not (pgx's statement cache), once.
	cacheName := func(i int) string { return fmt.Sprintf("stmtcache_%048x", i) } // pgx's form
	tc.sent.Store(sentTraced)
	assert.Equal(t, []string{"COMMIT"}, read(encodeMessages(t, &pgproto3.Query{String: "COMMIT"})))
	assert.EqualValues(t, sentUntraced, tc.sent.Load())
	tc.sent.Store(sentTraced)
	assert.Equal(t, []string{unknownStatement}, read(encodeMessages(t,
		&pgproto3.Bind{PreparedStatement: cacheName(1)}, &pgproto3.Execute{}, &pgproto3.Sync{},
		&pgproto3.Bind{PreparedStatement: cacheName(2)}, &pgproto3.Execute{}, &pgproto3.Sync{})))
	// A name of the application's that only begins like pgx's, bound
	// unknown (prepared past maxPrepared): a possible COMMIT, though the
	// tracer read the name.
	tc.sent.Store(sentTraced)
	assert.Equal(t, []string{unknownStatement}, read(encodeMessages(t,
		&pgproto3.Bind{PreparedStatement: "stmtcache_app commit"}, &pgproto3.Execute{}, &pgproto3.Sync{})))
	tc.sent.Store(sentTraced)
	assert.Equal(t, []string{unknownStatement}, read(encodeMessages(t,
		&pgproto3.Bind{PreparedStatement: "app commit past the bound"}, &pgproto3.Execute{}, &pgproto3.Sync{})))
	// A batch's: skipped while it is under way, unless shown.
	tc.sent.Store(sentBatch)
	assert.Equal(t, []string{"COMMIT"}, read(encodeMessages(t, &pgproto3.Parse{Query: "COMMIT"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Bind{PreparedStatement: cacheName(3)}, &pgproto3.Execute{}, &pgproto3.Sync{})))
	assert.EqualValues(t, sentBatch, tc.sent.Load())

	// Unwatched: nothing is given, names are kept (pgx's statement
	// cache's are not).
	tc.watch.Store(nil)
	tc.sent.Store(sentUntraced)
	assert.Empty(t, read(encodeMessages(t, &pgproto3.Parse{Name: "later", Query: "END"}, &pgproto3.Parse{Name: cacheName(4), Query: "END"}, &pgproto3.Query{String: "COMMIT"})))
	sql, ok := tc.preparedSQL("later")
	assert.True(t, ok)
	assert.Equal(t, "END", sql)
	_, ok = tc.preparedSQL(cacheName(4))
	assert.False(t, ok)
	// The unnamed statement parsed unwatched is not kept (nothing is
	// allocated for it): watched again, a Bind of it is unknown.
	assert.Empty(t, read(encodeMessages(t, &pgproto3.Parse{Query: "SELECT 4"})))
	assert.Nil(t, tc.unnamed.Load())
	tc.watch.Store(&f)
	assert.Equal(t, []string{unknownStatement}, read(bindUnnamed))
}

// A name closed makes room once the map is full; SQL past
// maxPreparedSQL is kept as a possible COMMIT.
func TestPreparedNamesBounded(t *testing.T) {
	tc := &trackedConn{}
	for i := 0; i < maxPrepared; i++ {
		name := "q" + strconv.Itoa(i)
		tc.readSent(encodeMessages(t, &pgproto3.Parse{Name: name, Query: "SELECT 1"}, &pgproto3.Describe{ObjectType: 'S', Name: name}, &pgproto3.Sync{}))
		tc.readSent(encodeMessages(t, &pgproto3.Close{ObjectType: 'S', Name: name}, &pgproto3.Sync{}))
	}
	tc.readSent(encodeMessages(t, &pgproto3.Parse{Name: "fresh", Query: "SELECT 2"}))
	sql, ok := tc.preparedSQL("fresh")
	assert.True(t, ok, "a name prepared after %d closed ones is not kept", maxPrepared)
	assert.Equal(t, "SELECT 2", sql)
	assert.Len(t, tc.prepared, maxPrepared)

	// Full of names not closed: a new one is not kept (and reads as a
	// possible COMMIT when run).
	tc = &trackedConn{}
	for i := 0; i < maxPrepared; i++ {
		tc.prepare("q"+strconv.Itoa(i), "SELECT 1")
	}
	tc.readSent(encodeMessages(t, &pgproto3.Parse{Name: "fresh", Query: "SELECT 2"}))
	_, ok = tc.preparedSQL("fresh")
	assert.False(t, ok)

	big := "SELECT '" + strings.Repeat("x", maxPreparedSQL) + "'"
	tc = &trackedConn{}
	tc.readSent(encodeMessages(t, &pgproto3.Parse{Name: "big", Query: big}))
	tc.prepare("big2", big)
	for _, name := range []string{"big", "big2"} {
		sql, _ := tc.preparedSQL(name)
		assert.Equal(t, unknownStatement, sql, name)
	}
}

// pgx's own BuildFrontend, as ParseConfig sets it (a function of pgconn's
// before pgx v5.9, pgproto3.NewFrontend after), is recognized.
func TestIsPgxFrontend(t *testing.T) {
	cfg, err := pgconn.ParseConfig("postgres://u:p@localhost/db?sslmode=disable")
	require.NoError(t, err)
	assert.True(t, isPgxFrontend(cfg.BuildFrontend))
	assert.True(t, isPgxFrontend(nil))
	assert.False(t, isPgxFrontend(func(r io.Reader, w io.Writer) *pgproto3.Frontend { return pgproto3.NewFrontend(r, w) }))
}

func FuzzReadSent(f *testing.F) {
	f.Add([]byte{'Q', 0, 0, 0, 9, 'S', 'E', 'L', 0})
	f.Add([]byte{'B', 0, 0, 0, 6, 0, 0, 'E', 0, 0, 0, 9, 0, 0, 0, 0, 0})
	f.Add([]byte{'P', 0, 0, 0, 8, 0, 'X', 0, 0, 0, 'B', 0, 0, 0, 4})
	f.Fuzz(func(t *testing.T, p []byte) {
		// The statements of one write are given once, as one string.
		tc := &trackedConn{}
		tc.readSent(p) // unwatched
		calls := 0
		f := func(string) { calls++ }
		tc.watch.Store(&f)
		tc.sent.Store(int32(len(p) % 3))
		tc.readSent(p)
		if calls > 1 {
			t.Fatalf("one write given %d times", calls)
		}
	})
}

// eofConn is a connection whose reads end at once.
type eofConn struct{ net.Conn }

func (eofConn) Read([]byte) (int, error)    { return 0, io.EOF }
func (eofConn) Write(b []byte) (int, error) { return len(b), nil }
func (eofConn) Close() error                { return nil }

// What pgconn's ExecBatch writes past the frontend: read as the
// frontend's without TLS; under TLS a possible COMMIT once the connection
// reads next (TLS's close alert is followed by a close), unless the
// tracer read it as a batch, the unnamed statement forgotten; nothing
// after a Terminate.
func TestUnframed(t *testing.T) {
	tc := &trackedConn{Conn: eofConn{}, reg: &connRegistry{}}
	var got []string
	f := func(sql string) { got = append(got, sql) }
	tc.watch.Store(&f)
	write := func(p []byte) []string {
		got = nil
		tc.unframed(p)
		return got
	}
	read := func() []string {
		got = nil
		_, _ = tc.Read(make([]byte, 1))
		return got
	}
	batch := encodeMessages(t, &pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	assert.Equal(t, []string{"SELECT 1"}, write(batch))
	require.NotNil(t, tc.unnamed.Load())

	tc.tlsAbove.Store(true)
	assert.Empty(t, write([]byte("\x17\x03\x03 records")))
	assert.Nil(t, tc.unnamed.Load(), "the unnamed statement is kept past a write that could not be read")
	assert.Equal(t, []string{unknownStatement}, read(), "its answer read")
	assert.Empty(t, read(), "given once")
	// A traced statement pgx began and never sent does not hide it.
	tc.sent.Store(sentTraced)
	write([]byte("\x17\x03\x03 records"))
	assert.Equal(t, []string{unknownStatement}, read())
	tc.sent.Store(sentBatch)
	write([]byte("\x17\x03\x03 records"))
	assert.Empty(t, read(), "pgx's own batch, read by the tracer")
	tc.sent.Store(sentUntraced)

	// Followed by a write, or by the watch's end, with no read: given
	// then.
	write([]byte("\x17\x03\x03 records"))
	got = nil
	_, _ = tc.Write(nil)
	assert.Equal(t, []string{unknownStatement}, got)

	// TLS's close alert when pgconn closes the connection itself.
	write([]byte("\x17\x03\x03 alert"))
	require.NoError(t, tc.Close())
	assert.Empty(t, read())

	// The frontend's Terminate: TLS's close alert follows.
	tc.tlsAbove.Store(false)
	assert.Empty(t, write(encodeMessages(t, &pgproto3.Terminate{})))
	assert.True(t, tc.terminated.Load())
	tc.tlsAbove.Store(true)
	write([]byte("\x17\x03\x03 alert"))
	assert.Empty(t, read())
}

// A Parse of the unnamed statement after other messages of the same Sync
// may be skipped by the server (an error among them): the statement
// reads as either; first after a Sync (or a simple query), as its own.
func TestUnnamedParseAfterAnError(t *testing.T) {
	tc := &trackedConn{}
	var got []string
	f := func(sql string) { got = append(got, sql) }
	tc.watch.Store(&f)
	read := func(p []byte) []string {
		got = nil
		tc.readSent(p)
		return got
	}
	bind := encodeMessages(t, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	read(encodeMessages(t, &pgproto3.Parse{Query: "COMMIT AND CHAIN"}, &pgproto3.Describe{ObjectType: 'S'}, &pgproto3.Sync{}))
	read(encodeMessages(t, &pgproto3.Parse{Name: "bad", Query: "SELEC 1"}, &pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Sync{}))
	assert.Equal(t, []string{"COMMIT AND CHAIN\n;\nSELECT 1"}, read(bind))
	// A pipeline's Parse in a write of its own, its Sync later.
	read(encodeMessages(t, &pgproto3.Parse{Name: "bad2", Query: "SELEC 1"}))
	read(encodeMessages(t, &pgproto3.Parse{Query: "SELECT 2"}))
	read(encodeMessages(t, &pgproto3.Sync{}))
	assert.Equal(t, []string{"COMMIT AND CHAIN\n;\nSELECT 1\n;\nSELECT 2"}, read(bind))
	// First of its Sync: its own.
	read(encodeMessages(t, &pgproto3.Parse{Query: "SELECT 3"}, &pgproto3.Sync{}))
	assert.Equal(t, []string{"SELECT 3"}, read(bind))
	read(encodeMessages(t, &pgproto3.Query{String: "SELECT 4"}))
	read(encodeMessages(t, &pgproto3.Parse{Query: "SELECT 5"}, &pgproto3.Sync{}))
	assert.Equal(t, []string{"SELECT 5"}, read(bind))
}
