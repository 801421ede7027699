package hasql

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgxha/pgxha/internal/stmtwatch"
)

// nodeTracer sits in every pooled connection of a node. It watches the
// errors the application meets: a connection lost or a server shutting down
// (57P01, 57P02, 57P03), or a pooler in between reporting a connection
// exception (class 08), has the node checked at once; a read-only error
// (25006) also marks the connection, which is closed when released instead of
// going back to the pool. It counts releases for the balancers (acquires
// are counted by node.acquire). The user's own tracer, if any, is called as
// before.
type nodeTracer struct {
	n           *node
	user        pgx.QueryTracer
	userRelease pgxpool.ReleaseTracer // user as a ReleaseTracer, or nil
	// unpooled: the connections are database/sql's (see DB), which pgxpool
	// never releases: a 25006 does not mark them (database/sql drops them
	// itself once their node no longer qualifies).
	unpooled bool
}

// forDB returns the tracer for the connections of a *sql.DB made by DB.
func (t *nodeTracer) forDB() *nodeTracer {
	c := *t
	c.unpooled = true
	return &c
}

// newNodeTracer wraps the user's tracer. The user's pgxpool.AcquireTracer
// methods, if any, are not called: the Manager traces acquires itself (the
// hasql.acquire span, with the node that won), so a tracer such as otelpgx
// adds its query spans without a second span for the same acquire.
func newNodeTracer(n *node, user pgx.QueryTracer) pgx.QueryTracer {
	t := &nodeTracer{n: n, user: user}
	t.userRelease, _ = user.(pgxpool.ReleaseTracer)
	return t
}

func (t *nodeTracer) observe(conn *pgx.Conn, err error) {
	if err == nil {
		return
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "25006": // read_only_sql_transaction: the node may be master no longer
			if !t.unpooled && beganOnMaster(conn) {
				// A write on a replica, or in a READ ONLY transaction,
				// meets 25006 too: only a connection its statement took
				// for the master's is closed on release.
				t.n.poison(conn)
			}
			t.n.errorWake()
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03": // admin shutdown, crash shutdown, cannot connect now
			t.n.errorWake()
		case strings.HasPrefix(pgErr.Code, "08"):
			// A connection exception from a pooler in between: PgBouncer's
			// "server login has been failing" or "server conn crashed?"
			// (08P01) when the server behind it is gone.
			t.n.errorWake()
		}
		return
	}
	if conn != nil && conn.IsClosed() {
		t.n.errorWake() // the connection was lost
	}
}

// beganOnMaster reports whether conn's node was the master when its last
// statement began (see began).
func beganOnMaster(conn *pgx.Conn) bool {
	tc := trackedOf(conn)
	return tc == nil || tc.master.Load()
}

// began notes, on the connection, whether its node is the master as a
// statement begins: what a *NodeLostError says if the statement loses it.
func (t *nodeTracer) began(conn *pgx.Conn, sql string, b *pgx.Batch) {
	if conn.IsClosed() {
		return // the statement will not run (a rollback after the loss): keep what the lost one said
	}
	tc := trackedOf(conn)
	if tc == nil {
		return
	}
	if master := t.n.m.snap.Load().master == t.n; tc.master.Load() != master {
		tc.master.Store(master)
	}
	tc.wroteAtBegin.Store(tc.wrote.Load())
	if w := tc.watch.Load(); w != nil {
		// Before the flag of the statement before is cleared: the watch
		// may read it.
		if b != nil {
			// One string for the batch: the queries go out together,
			// and the flag of the statement before is the batch's
			// first to read.
			var sb strings.Builder
			for _, q := range b.QueuedQueries {
				sb.WriteString(tc.resolve(q.SQL))
				sb.WriteString("\n;\n")
			}
			(*w)(sb.String())
			tc.sent.Store(sentBatch)
		} else {
			(*w)(tc.resolve(sql))
			tc.sent.Store(sentTraced)
		}
	}
	if tc.syncRepCancelled.Load() {
		tc.syncRepCancelled.Store(false) // of the statement before
	}
}

// maxPrepared bounds the prepared statements a connection keeps the SQL
// of (see resolve): the names an application prepares on each connection,
// pgx's statement cache apart.
const maxPrepared = 4096

// prepared is what a connection knows of a statement prepared under a
// name.
type prepared struct {
	sql    string
	closed bool // a Close of it was sent: first to go when the map is full
}

// prepare notes the SQL of a statement prepared on the connection under
// a name of the application's (not pgx's statement cache's), once the
// server accepted it.
func (tc *trackedConn) prepare(name, sql string) {
	if name == "" || isCacheName(name) {
		return
	}
	if len(sql) > maxPreparedSQL {
		sql = unknownStatement
	}
	tc.prepMu.Lock()
	defer tc.prepMu.Unlock()
	if p, ok := tc.prepared[name]; ok || tc.roomForPrepared() {
		tc.setPrepared(name, prepared{sql: sql}, p)
	}
}

// roomForPrepared reports whether a name not kept yet can be, making room
// by forgetting a closed one when the map is full. With tc.prepMu.
func (tc *trackedConn) roomForPrepared() bool {
	if tc.prepared == nil {
		tc.prepared = make(map[string]prepared)
	}
	if len(tc.prepared) < maxPrepared {
		return true
	}
	if tc.preparedClosed == 0 {
		return false
	}
	for name, p := range tc.prepared {
		if p.closed {
			delete(tc.prepared, name)
			tc.preparedClosed--
			return true
		}
	}
	return false
}

// setPrepared sets what is known of name (old: what was), keeping the
// count of closed ones. With tc.prepMu.
func (tc *trackedConn) setPrepared(name string, p, old prepared) {
	if old.closed {
		tc.preparedClosed--
	}
	if p.closed {
		tc.preparedClosed++
	}
	tc.prepared[name] = p
}

// resolve returns the SQL of the statement prepared as sql, if sql names
// one (pgx runs a prepared statement given its name), else sql.
func (tc *trackedConn) resolve(sql string) string {
	if p, ok := tc.preparedSQL(sql); ok {
		return p
	}
	return sql
}

// preparedSQL returns the SQL of the statement prepared under name.
func (tc *trackedConn) preparedSQL(name string) (string, bool) {
	tc.prepMu.Lock()
	defer tc.prepMu.Unlock()
	p, ok := tc.prepared[name]
	return p.sql, ok
}

// trackedOfTraced is trackedOf for the connection a trace hook is given,
// which may be nil.
func trackedOfTraced(conn *pgx.Conn) *trackedConn {
	if conn == nil {
		return nil
	}
	return trackedOf(conn)
}

// ended notes that a traced statement or batch is over: the messages
// sent after it are not its own.
func (tc *trackedConn) ended() {
	if tc != nil && tc.sent.Load() != sentUntraced {
		tc.sent.Store(sentUntraced)
	}
}

// answered gives the end watch (stmtwatch.Ended), if one is set, what the
// server answered a traced statement.
func (tc *trackedConn) answered(tag pgconn.CommandTag, err error) {
	if tc == nil {
		return
	}
	if f := tc.endWatch.Load(); f != nil {
		(*f)(tag.String(), err)
	}
}

func init() {
	stmtwatch.Watch = func(conn *pgx.Conn, f func(sql string)) (func(), bool) {
		tc := trackedOf(conn)
		if tc == nil {
			return nil, false
		}
		tc.sent.Store(sentUntraced)
		tc.watch.Store(&f)
		return func() {
			tc.takeUnframed() // sent, its answer never read
			if tc.watch.CompareAndSwap(&f, nil) {
				tc.sent.Store(sentUntraced)
			}
		}, true
	}
	stmtwatch.Ended = func(conn *pgx.Conn, f func(tag string, err error)) (func(), bool) {
		tc := trackedOf(conn)
		if tc == nil {
			return nil, false
		}
		tc.endWatch.Store(&f)
		return func() { tc.endWatch.CompareAndSwap(&f, nil) }, true
	}
}

func (t *nodeTracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	t.began(conn, data.SQL, nil)
	if t.user != nil {
		return t.user.TraceQueryStart(ctx, conn, data)
	}
	return ctx
}

func (t *nodeTracer) TraceQueryEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryEndData) {
	tc := trackedOfTraced(conn)
	tc.answered(data.CommandTag, data.Err)
	tc.ended()
	t.observe(conn, data.Err)
	if t.user != nil {
		t.user.TraceQueryEnd(ctx, conn, data)
	}
}

func (t *nodeTracer) TraceBatchStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	t.began(conn, "", data.Batch)
	if u, ok := t.user.(pgx.BatchTracer); ok {
		return u.TraceBatchStart(ctx, conn, data)
	}
	return ctx
}

func (t *nodeTracer) TraceBatchQuery(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchQueryData) {
	trackedOfTraced(conn).answered(data.CommandTag, data.Err)
	t.observe(conn, data.Err)
	if u, ok := t.user.(pgx.BatchTracer); ok {
		u.TraceBatchQuery(ctx, conn, data)
	}
}

func (t *nodeTracer) TraceBatchEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchEndData) {
	trackedOfTraced(conn).ended()
	t.observe(conn, data.Err)
	if u, ok := t.user.(pgx.BatchTracer); ok {
		u.TraceBatchEnd(ctx, conn, data)
	}
}

func (t *nodeTracer) TraceCopyFromStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceCopyFromStartData) context.Context {
	t.began(conn, "COPY", nil)
	if u, ok := t.user.(pgx.CopyFromTracer); ok {
		return u.TraceCopyFromStart(ctx, conn, data)
	}
	return ctx
}

func (t *nodeTracer) TraceCopyFromEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceCopyFromEndData) {
	trackedOfTraced(conn).ended()
	t.observe(conn, data.Err)
	if u, ok := t.user.(pgx.CopyFromTracer); ok {
		u.TraceCopyFromEnd(ctx, conn, data)
	}
}

// preparing is the context key of the statement a prepare traced by
// TracePrepareStart is for: its name is kept when the server accepts it.
type preparing struct{}

func (t *nodeTracer) TracePrepareStart(ctx context.Context, conn *pgx.Conn, data pgx.TracePrepareStartData) context.Context {
	if data.Name != "" && !isCacheName(data.Name) {
		ctx = context.WithValue(ctx, preparing{}, data)
	}
	if u, ok := t.user.(pgx.PrepareTracer); ok {
		return u.TracePrepareStart(ctx, conn, data)
	}
	return ctx
}

func (t *nodeTracer) TracePrepareEnd(ctx context.Context, conn *pgx.Conn, data pgx.TracePrepareEndData) {
	t.observe(conn, data.Err)
	// A name pgx had prepared already sent nothing: what the connection
	// knows of it stays (it may have been prepared again past pgx).
	if p, ok := ctx.Value(preparing{}).(pgx.TracePrepareStartData); ok && data.Err == nil && !data.AlreadyPrepared {
		if tc := trackedOf(conn); tc != nil {
			tc.prepare(p.Name, p.SQL)
		}
	}
	if u, ok := t.user.(pgx.PrepareTracer); ok {
		u.TracePrepareEnd(ctx, conn, data)
	}
}

// TraceConnectStart marks the connect's context, after the user's tracer
// (which may return a context of its own): the node's dialer takes a dial
// without the mark for a cancel request's (see node.dialCancel).
func (t *nodeTracer) TraceConnectStart(ctx context.Context, data pgx.TraceConnectStartData) context.Context {
	if u, ok := t.user.(pgx.ConnectTracer); ok {
		ctx = u.TraceConnectStart(ctx, data)
	}
	return connecting(ctx)
}

func (t *nodeTracer) TraceConnectEnd(ctx context.Context, data pgx.TraceConnectEndData) {
	if data.Err == nil && data.Conn != nil && t.n.unboundAfterConnect {
		data.Conn.PgConn().Frontend().SetMaxBodyLen(pgxMaxMessage) // see maxStartupMessage
		if tc := trackedOf(data.Conn); tc != nil && tc.reader != nil {
			tc.reader.stop()
		}
	}
	t.n.connectTraced(data.Conn, data.Err, !t.unpooled)
	if u, ok := t.user.(pgx.ConnectTracer); ok {
		u.TraceConnectEnd(ctx, data)
	}
}

// TraceRelease runs at the start of every Release.
func (t *nodeTracer) TraceRelease(pool *pgxpool.Pool, data pgxpool.TraceReleaseData) {
	t.n.inUse.Add(-1) // counted by node.acquire
	if t.userRelease != nil {
		t.userRelease.TraceRelease(pool, data) // on the connection as the caller left it
	}
	if t.n.nPoisoned.Load() > 0 {
		if _, ok := t.n.poisoned.LoadAndDelete(data.Conn); ok {
			t.n.nPoisoned.Add(-1)
			// Closed now, the pool destroys it instead of keeping it.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			data.Conn.Close(ctx)
			cancel()
		}
	}
}

// poison marks conn to be closed on release.
func (n *node) poison(conn *pgx.Conn) {
	if conn == nil {
		return
	}
	if _, loaded := n.poisoned.LoadOrStore(conn, struct{}{}); !loaded {
		n.nPoisoned.Add(1)
	}
}
