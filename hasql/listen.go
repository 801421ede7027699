package hasql

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Notification is one NOTIFY received by a Listener.
type Notification struct {
	Channel string
	Payload string
	// PID is the process ID of the sending backend.
	PID uint32
	// Node is the address of the master it came from.
	Node string
}

// ErrMissed is matched (errors.Is) by the *MissedError a Listener returns
// after its connection to the master was lost.
var ErrMissed = errors.New("hasql: notifications may have been missed")

// MissedError reports that a Listener lost its connection and listens again,
// now on To: notifications committed between Lost and Resumed may not have
// been received; every one committed before Lost was.
type MissedError struct {
	From, To      string // addresses of the masters before and after
	Lost, Resumed time.Time
	Err           error // why the old connection ended
}

func (e *MissedError) Error() string {
	return fmt.Sprintf("hasql: notifications may have been missed between %s and %s (listening on %s, then %s): %v",
		e.Lost.Format(time.RFC3339Nano), e.Resumed.Format(time.RFC3339Nano), e.From, e.To, e.Err)
}

func (e *MissedError) Unwrap() error { return e.Err }

// Is matches ErrMissed.
func (e *MissedError) Is(target error) bool { return target == ErrMissed }

// Listener receives notifications on a connection of its own to whichever
// node is master, and moves to the new master after a failover. It is safe
// for concurrent use; one goroutine should call Receive.
type Listener struct {
	m        *Manager
	channels []string
	events   chan listenEvent
	cancel   context.CancelFunc
	done     chan struct{}
	once     sync.Once
	// mark is the channel of the Listener's own markers (see sync); the
	// fields below it are the run goroutine's alone.
	mark string
	// synced: every notification committed before it on the current
	// connection has been received (a marker sent after it came back);
	// markSeq and markAt: the marker in flight (0: none) and when it was
	// sent.
	synced  time.Time
	markSeq uint64
	markAt  time.Time
	// markNext: no marker before it (one the server refused waits a
	// marker period).
	markNext time.Time
	// heard: when the connection last delivered a notification.
	heard time.Time
	// backend is the server process the current connection's LISTEN ran
	// in (pg_backend_pid(), 0 unknown), and proxied whether the
	// connection's backend key names another (a pooler in between): see
	// sync.
	backend uint32
	proxied bool
	// server is the postmaster start time of the server the current
	// connection's LISTEN ran on: another at the next connection, though
	// at the same address (a name or virtual IP that moved), is a new
	// master that may have taken notifications already (see run).
	server string
}

type listenEvent struct {
	n   *Notification
	err error
}

// Listen starts listening on channels on the master. It returns once the
// first LISTEN is in place, or with ctx's error while there is no master
// (bounded by Config.AcquireTimeout when ctx has no deadline), or
// ErrClosed when the Manager closes.
// Close the Listener when done; it also stops when the Manager is closed.
func (m *Manager) Listen(ctx context.Context, channels ...string) (*Listener, error) {
	if len(channels) == 0 {
		return nil, errors.New("hasql: Listen: no channel")
	}
	for _, ch := range channels {
		if ch == "" {
			return nil, errors.New("hasql: Listen: empty channel name")
		}
	}
	lctx, cancel := context.WithCancel(m.ctx)
	l := &Listener{m: m, channels: channels, events: make(chan listenEvent, 256), cancel: cancel, done: make(chan struct{}),
		mark: fmt.Sprintf("pgxha.listener.%016x", rand.Uint64())}
	var conn *pgx.Conn
	var n *node
	var err error
	for range 2*len(m.nodesNow()) + 1 {
		s := m.snap.Load()
		conn, n, err = l.connect(ctx)
		if err == nil || n == nil || ctx.Err() != nil || m.ctx.Err() != nil {
			break // listening, or no master (the pick's error), or done
		}
		// The master may have failed or lost its role while the connection
		// was made (a switchover's old leader refuses connections while it
		// shuts down): once the view changes, pick again. A node that
		// fails while the view stays as it is for a check timeout is
		// what Listen returns.
		if !m.waitChange(ctx, s, m.cfg.CheckTimeout) {
			break
		}
	}
	if err != nil && ctx.Err() == nil && m.ctx.Err() != nil {
		err = ErrClosed // whatever Close cut on the way (a connect, a LISTEN)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	// Under the lock, as Close swaps in its closed snapshot before it
	// waits for the Manager's goroutines: the Listener's is counted
	// before that wait, or not started at all.
	m.mu.Lock()
	if m.snap.Load().closed {
		m.mu.Unlock()
		cancel()
		conn.Close(context.Background())
		return nil, ErrClosed
	}
	m.wg.Add(1)
	m.mu.Unlock()
	go l.run(lctx, conn, n, time.Now())
	return l, nil
}

// Receive returns the next notification. After the listening connection
// was lost it returns a *MissedError (errors.Is(err, ErrMissed)) once it
// listens again on the master, then goes on with notifications. It returns
// ErrClosed after Close or the Manager's Close, and ctx's error when ctx
// ends first.
func (l *Listener) Receive(ctx context.Context) (*Notification, error) {
	select {
	case ev, ok := <-l.events:
		if !ok {
			return nil, ErrClosed
		}
		return ev.n, ev.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops listening and waits for the Listener's goroutine.
func (l *Listener) Close() {
	l.once.Do(l.cancel)
	<-l.done
}

// connect opens a connection to the master and listens there.
func (l *Listener) connect(ctx context.Context) (*pgx.Conn, *node, error) {
	// Without a deadline, the wait for a master is bounded like an
	// acquire's (Config.AcquireTimeout).
	pctx, pcancel := l.m.boundAcquire(ctx)
	n, err := l.m.pick(pctx, targetMaster, nil)
	pcancel()
	if err != nil {
		return nil, nil, err
	}
	// The connect and the LISTENs end when the node leaves the set, when
	// a view no longer names it master (a master that stops answering
	// after the connect is found down by its checks), or when the
	// Manager closes.
	ctx, release := n.whileIn(ctx)
	defer release()
	ctx, unwatch := l.m.whileMaster(ctx, n)
	defer unwatch()
	cfg := n.pool.Config().ConnConfig
	cfg.Tracer = nil
	// A listening session is idle by nature: the pool's
	// idle_session_timeout (a way to reap idle pooled sessions) would end
	// it on a healthy server, and lose what is sent until it is back.

	err = n.beforeConnect(ctx, cfg)
	noIdleTimeout(cfg.RuntimeParams)
	var conn *pgx.Conn
	if err == nil {
		// No tracer to mark the connect (see nodeTracer.TraceConnectStart):
		// the node's dialer takes an unmarked dial for a cancel request's.
		conn, err = pgx.ConnectConfig(connecting(ctx), cfg)
		err = scrubConnect(err) // no password in what Listen returns
		n.connected(err)
		if err == nil && n.unboundAfterConnect {
			conn.PgConn().Frontend().SetMaxBodyLen(maxListenMessage)
		}
	}
	if err != nil {
		if l.m.ctx.Err() != nil {
			return nil, n, ErrClosed // the connect was cut by Close
		}
		if ctx.Err() == nil {
			n.connectFailed("listen", err)
		}
		return nil, n, fmt.Errorf("hasql: listen on %s: %w", n.cfg.Addr, err)
	}
	// One statement (the simple protocol, as any statement without
	// arguments): the caller's channels and the Listener's own (see
	// sync), answered before any notification of them is sent.
	// The server process that runs them is read in the same statement.
	var listen strings.Builder
	for _, ch := range append(l.channels[:len(l.channels):len(l.channels)], l.mark) {
		listen.WriteString("LISTEN " + pgx.Identifier{ch}.Sanitize() + ";")
	}
	listen.WriteString("SELECT pg_backend_pid(), pg_postmaster_start_time()")
	backend, server, err := execBackend(ctx, conn, listen.String())
	if err != nil {
		err = clearEchoed(err, conn.Config().Password)
		conn.Close(context.Background())
		return nil, n, fmt.Errorf("hasql: listen on %s: %w", n.cfg.Addr, err)
	}
	l.backend, l.proxied, l.server = backend, backend != conn.PgConn().PID(), server
	return conn, n, nil
}

// execBackend runs sql, statements that end with SELECT pg_backend_pid()
// and maybe another column, on conn, and returns the pid that last one
// read (0 when it read none it could parse) and the other column's text.
func execBackend(ctx context.Context, conn *pgx.Conn, sql string) (uint32, string, error) {
	results, err := conn.PgConn().Exec(ctx, sql).ReadAll()
	if err != nil {
		return 0, "", err
	}
	if len(results) == 0 {
		return 0, "", nil
	}
	last := results[len(results)-1]
	if len(last.Rows) != 1 || len(last.Rows[0]) == 0 {
		return 0, "", nil
	}
	var other string
	if len(last.Rows[0]) > 1 {
		other = string(last.Rows[0][1])
	}
	pid, err := strconv.ParseUint(string(last.Rows[0][0]), 10, 32)
	if err != nil {
		return 0, other, nil
	}
	return uint32(pid), other, nil
}

// run is the Listener's goroutine, owned by the Listener and the Manager.
// since is when conn began listening.
func (l *Listener) run(ctx context.Context, conn *pgx.Conn, n *node, since time.Time) {
	defer l.m.wg.Done()
	defer close(l.done)
	defer close(l.events)
	defer func() {
		if conn != nil {
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn.Close(closeCtx)
			cancel()
		}
	}()
	l.synced, l.markSeq = since, 0
	for ctx.Err() == nil {
		err := l.listen(ctx, conn, n)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errNoLongerMaster) && !l.drain(ctx, conn, n) {
			return // ctx ended
		}
		lost, from, server := l.lostSince(n, since), n.cfg.Addr, l.server
		// The server's error may say the password back (one that got it,
		// see docs/security.md): cleared before the caller sees it.
		err = clearEchoed(err, conn.Config().Password)
		closeCtx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		conn.Close(closeCtx)
		cancel()
		conn = nil
		// Reconnect to whichever node is master, backing off while that
		// fails (pick itself waits while there is none).
		b := backoff.WithContext(backoff.NewExponentialBackOff(
			backoff.WithInitialInterval(10*time.Millisecond), backoff.WithMaxInterval(time.Second),
			backoff.WithMaxElapsedTime(0)), ctx)
		_ = backoff.Retry(func() error {
			var err error
			conn, n, err = l.connect(ctx)
			return err
		}, b)
		if conn == nil {
			return // ctx ended
		}
		if n.cfg.Addr != from || l.server != server {
			// The new master may have taken notifications since it left
			// recovery, while the old one still passed its checks: the
			// window begins no later than its last check in recovery (or,
			// never seen in recovery, when the old connection began).
			// So too at the same address when another server answers
			// there (a name or virtual IP moved onto the new master), or
			// the server restarted.
			if r := n.lastInRecovery(); r.IsZero() {
				lost = since
			} else if r.Before(lost) {
				lost = r
			}
		}
		since = time.Now()
		l.synced, l.markSeq = since, 0
		miss := &MissedError{From: from, To: n.cfg.Addr, Lost: lost, Resumed: since, Err: err}
		select {
		case l.events <- listenEvent{err: miss}:
		case <-ctx.Done():
			return
		}
	}
}

// noIdleTimeout makes a Listener's startup parameters end with
// idle_session_timeout 0 when they set it, however spelt (any case, '-'
// for '_', in options' -c or --): a startup parameter is applied after
// options, and the Listener's session is idle by nature.
func noIdleTimeout(params map[string]string) {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	found := strings.Contains(norm(params["options"]), "idle_session_timeout")
	for k := range params {
		if norm(k) == "idle_session_timeout" {
			delete(params, k)
			found = true
		}
	}
	if found {
		params["idle_session_timeout"] = "0"
	}
}

// whileMaster returns ctx, ended also once a view no longer names n
// master; release ends the watch (its goroutine, owned by the caller).
func (m *Manager) whileMaster(ctx context.Context, n *node) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			s := m.snap.Load()
			if s.master != n {
				cancel()
				return
			}
			select {
			case <-s.changed:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ctx, func() { cancel(); <-done }
}

// errNoLongerMaster is why listen leaves a connection that still works.
var errNoLongerMaster = errors.New("no longer master")

// lostSince is when notifications sent on n may have begun to be missed:
// when the last marker the Listener got back on its connection was sent
// (see sync): every notification committed before it had been received,
// those the server had yet to send (a burst the application reads slowly,
// a backend slow to deliver) included; and not before the connection began
// listening (what came before is the last MissedError's). What n took since
// is in the window; what the next master took meanwhile is added by run.
func (l *Listener) lostSince(n *node, since time.Time) time.Time {
	good := l.synced
	if good.Before(since) {
		good = since
	}
	if now := time.Now(); now.Before(good) {
		good = now
	}
	return good
}

// sync sends a marker on conn, to the Listener's own channel: when it
// comes back, every notification committed before it was sent has been
// received (the server sends them in commit order). listen sends one only
// after a wait that found the connection idle, a check interval (a second
// at least) after the last came back: never while a backlog is on its way
// (pgx would read it all into memory to get the statement's answer).
func (l *Listener) sync(ctx context.Context, conn *pgx.Conn) error {
	seq := uint64(time.Now().UnixNano())
	at := time.Now()
	// Bounded as a check is: a master that hangs does not hold the
	// Listener here.
	ctx, cancel := context.WithTimeout(ctx, l.m.cfg.CheckTimeout)
	defer cancel()
	// Its commit waits for no standby: a synchronous standby that is
	// down holds the master's commits, not the Listener.
	// The channel and payload are the Listener's own (hex digits, a
	// number): written in the statement, sent as one message.
	// The NOTIFY statement, not pg_notify(): it needs no privilege (a
	// server may revoke EXECUTE on the function from PUBLIC). Its commit
	// takes the lock every notifying transaction holds until it ends, its
	// wait for synchronous standbys included: with a standby down, an
	// application's NOTIFY holds it for as long, and the marker gives up
	// after lock_timeout, with an ERROR that leaves the connection be.
	// The server process that runs it is read in the same statement: one
	// other than the LISTEN's means the connection's statements run on
	// more than one server session (a pooler in transaction mode), which
	// receive each other's notifications: a marker that came back says
	// nothing of what the session received, and what was sent since the
	// LISTEN may have gone to another client.
	l.markNext = at.Add(l.markEvery())
	backend, _, err := execBackend(ctx, conn, "SET LOCAL lock_timeout = 100; SET LOCAL synchronous_commit = local; NOTIFY "+
		pgx.Identifier{l.mark}.Sanitize()+", '"+strconv.FormatUint(seq, 10)+"'; SELECT pg_backend_pid()")
	if err == nil && backend != 0 && l.backend != 0 && backend != l.backend {
		l.synced = time.Time{}
		return errPooledSession
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Severity != "FATAL" && pgErr.Severity != "PANIC" && !conn.IsClosed() {
			// Refused by a server that goes on (a lock not had in time,
			// a read-only transaction): no marker this time, the
			// window stays where it was.
			return nil
		}
		return err
	}
	l.markSeq, l.markAt = seq, at
	return nil
}

// marker reports whether nt is one of the Listener's markers, and notes
// the one in flight coming back.
func (l *Listener) marker(conn *pgx.Conn, nt *pgconn.Notification) bool {
	if nt.Channel != l.mark {
		return false
	}
	// Not by PID: a pooler in between (PgBouncer) gives its clients a
	// backend key of its own, not the server's.
	if l.markSeq != 0 && nt.Payload == strconv.FormatUint(l.markSeq, 10) {
		l.synced, l.markSeq = l.markAt, 0
	}
	return true
}

// lastInRecovery is when the last check that found n in recovery began;
// zero when none did.
func (n *node) lastInRecovery() time.Time {
	if ns := n.inRecoveryBegan.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// markIdle is how long a wait for a notification finds nothing before the
// Listener sends a marker (see sync), and minMarkEvery the shortest time
// between two markers (each is a transaction's commit on the master: once
// per check interval, and at most once a second).
const (
	markIdle     = 20 * time.Millisecond
	minMarkEvery = time.Second
)

// drainMax bounds the notifications drain delivers, and drainWait how
// long it waits for each.
const (
	drainMax  = 10000
	drainWait = 20 * time.Millisecond
)

// drain delivers the notifications already on conn, a connection to n that
// works but that the Listener leaves (n is no longer master): the server
// sent them before. It reports false when ctx ended.
func (l *Listener) drain(ctx context.Context, conn *pgx.Conn, n *node) bool {
	for range drainMax {
		wctx, cancel := context.WithTimeout(ctx, drainWait)
		notification, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			return ctx.Err() == nil
		}
		if l.marker(conn, notification) {
			continue
		}
		ev := listenEvent{n: &Notification{Channel: notification.Channel, Payload: notification.Payload, PID: notification.PID, Node: n.cfg.Addr}}
		select {
		case l.events <- ev:
		case <-ctx.Done():
			return false
		}
	}
	return ctx.Err() == nil
}

// listen delivers notifications from conn until it fails, the master
// changes, or ctx ends. It returns why it stopped.
func (l *Listener) listen(ctx context.Context, conn *pgx.Conn, n *node) error {
	for {
		s := l.m.snap.Load()
		if s.master != n {
			return fmt.Errorf("%s is %w", n.cfg.Addr, errNoLongerMaster)
		}
		waitCtx, cancel := context.WithCancel(ctx)
		var wake *time.Timer
		var due atomic.Bool
		var late atomic.Bool
		if l.markSeq == 0 {
			// Woken when the next marker is due, after an idle wait of
			// markIdle at least.
			wake = time.AfterFunc(max(l.markEvery()-time.Since(l.synced), time.Until(l.markNext), markIdle), func() {
				due.Store(true)
				cancel()
			})
		} else {
			// A marker the server took that has not come back while
			// nothing else came for markBack: the session does not
			// receive what is committed (a pooler in transaction mode
			// gave its LISTEN to a server connection it shares, or
			// closed that one): lost, as a failed connection is.
			last := l.markAt
			if l.heard.After(last) {
				last = l.heard
			}
			wake = time.AfterFunc(max(time.Until(last.Add(l.markBack())), 0), func() {
				late.Store(true)
				cancel()
			})
		}
		watchDone := make(chan struct{})
		go func() {
			// Owned by this wait: stops when it ends.
			defer close(watchDone)
			select {
			case <-s.changed:
				cancel()
			case <-waitCtx.Done():
			}
		}()
		notification, err := conn.WaitForNotification(waitCtx)
		if wake != nil {
			wake.Stop()
		}
		cancel()
		<-watchDone
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if l.m.snap.Load().master != n {
				return fmt.Errorf("%s is %w", n.cfg.Addr, errNoLongerMaster)
			}
			if errors.Is(err, context.Canceled) {
				if late.Load() {
					if l.proxied {
						// Through a pooler, markers that came back
						// before say nothing of what this session
						// received (see sync).
						l.synced = time.Time{}
					}
					return errMarkerLost
				}
				if due.Load() {
					// Nothing came for markIdle or more: a marker.
					if err := l.sync(ctx, conn); err != nil {
						if ctx.Err() != nil {
							return ctx.Err()
						}
						if err != errPooledSession {
							n.trigger()
						}
						return err
					}
				}
				continue // the view changed but n is still master, or a marker was due
			}
			n.trigger()
			return err
		}
		l.heard = time.Now()
		if l.marker(conn, notification) {
			continue
		}
		ev := listenEvent{n: &Notification{Channel: notification.Channel, Payload: notification.Payload, PID: notification.PID, Node: n.cfg.Addr}}
		select {
		case l.events <- ev:
			// A reader slower than markBack does not make the marker late.
			l.heard = time.Now()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// errMarkerLost is why listen leaves a connection whose marker did not
// come back: it does not receive what the master commits.
var errMarkerLost = errors.New("the Listener's own notification did not come back: the session does not receive notifications (a pooler in transaction mode?)")

// errPooledSession is why listen leaves a connection whose statements ran
// on more than one server session (see sync).
var errPooledSession = errors.New("the Listener's statements ran in more than one server session: notifications need a session of their own (a pooler in transaction mode gives them to other clients)")

// markEvery is how often the Listener sends a marker: once per check
// interval, a second at least.
func (l *Listener) markEvery() time.Duration { return max(l.m.cfg.CheckInterval, minMarkEvery) }

// markBack is how long a marker may take to come back on a connection
// that delivers nothing else.
func (l *Listener) markBack() time.Duration {
	return 2 * max(l.markEvery(), l.m.cfg.CheckTimeout)
}
