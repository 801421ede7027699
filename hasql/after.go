package hasql

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgxha/pgxha/internal/safetext"
)

// Reads after a token. After(tok) resolves, once per acquire, against the
// Manager's view of the cluster:
//
//   - the token's cluster must be this one (system identifier);
//   - on the cluster's timeline, the read needs a node that replayed the
//     token's position (MinLSN), else the master after TokenWait;
//   - on an older timeline, the write is in the cluster's history only if
//     the token's position is at or before the point where its timeline
//     ended, read from the current timeline's history file: then as above;
//     else the read fails with ErrWriteLost;
//   - on a newer timeline than any the Manager has seen, it waits a round
//     of checks for the view to catch up, then fails with ErrTokenAhead.

var (
	// ErrTokenForeign: the token was taken on another cluster (another
	// system identifier) than the one the Manager reaches.
	ErrTokenForeign = errors.New("hasql: the token is of another cluster")
	// ErrWriteLost: the token's write is not in the cluster's history: its
	// timeline ended, in a failover, before the token's position (the new
	// master never had the write), or its timeline is not an ancestor of
	// the cluster's.
	ErrWriteLost = errors.New("hasql: the token's write is not in the cluster's history (lost in a failover)")
	// ErrTokenUnread: the write is done (committed), but its token could
	// not be read after it (CommitToken, Querier.ExecToken; CommitLSN's
	// position too): do not run it again; a read after an older token may
	// miss it for a moment.
	ErrTokenUnread = errors.New("hasql: the write is done, but its token could not be read")
	// ErrForkUnknown: the token is from an older timeline than the
	// cluster's, and the point where that timeline ended cannot be read
	// (the user may not read the timeline history file; see
	// docs/read-your-writes.md): whether the write survived the failover is
	// not known.
	ErrForkUnknown = errors.New("hasql: the token's timeline ended in a failover at a point that cannot be read")
	// ErrTokenAhead: the token is from a newer timeline than any the
	// Manager has seen in the cluster, even after a round of checks.
	ErrTokenAhead = errors.New("hasql: the token is from a newer timeline than the cluster's")
)

// TokenError is returned by an acquire with After when the token cannot be
// honoured. It unwraps to one of ErrTokenForeign, ErrWriteLost,
// ErrForkUnknown or ErrTokenAhead, and to Cause when there is one.
type TokenError struct {
	Token Token
	// Err is the sentinel that says what is wrong.
	Err error
	// Detail says it with the figures (timelines, positions, fork point).
	Detail string
	// Cause is the error that kept the fork point from being read, for
	// ErrForkUnknown.
	Cause error
}

func (e *TokenError) Error() string {
	s := e.Err.Error() + ": token " + e.Token.String()
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

func (e *TokenError) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Err, e.Cause}
	}
	return []error{e.Err}
}

// After accepts only nodes that have the write tok stands for (see
// Manager.Token): replicas that replayed its position, on its timeline or
// on a newer one that forked after it. While none has, the acquire waits up
// to the Manager's TokenWait (hasql_token_wait; MinLSNWait overrides it per
// call) for one, then takes the master. It fails with a *TokenError when
// the token cannot be honoured: another cluster's (ErrTokenForeign), a
// write lost in a failover (ErrWriteLost), a fork point that cannot be read
// (ErrForkUnknown). The zero Token asks nothing.
//
// A replica that a probe finds past the position (its last check was
// behind it) serves only when its walreceiver shows the timeline the token
// was resolved against, or one the write is in: one repointed to a master
// the Manager has not seen yet may be past the position on a timeline that
// forked before the write. One with no walreceiver to show (or a check user
// without pg_monitor) serves once its checks show the position.
//
// Several After options ask for every token's write, each resolved on its
// own (a token of another cluster or a lost write among them fails the
// read). With other options, After narrows them as MinLSN does; with PreferMaster
// the master serves whenever there is one, and replicas that have the write
// while there is none.
func After(tok Token) ReplicaOption {
	return ReplicaOption{kind: optAfter, n: int64(tok.LSN), tl: tok.Timeline, sys: tok.SystemID}
}

// PreferMaster sends reads that want the freshest data to the master, and,
// while there is no master (a failover, a master down), to a sync replica,
// then to any replica within the lag limits (the Manager's, or MaxLag's),
// so that such read paths stay up through a failover (PgJDBC's
// preferPrimary). With After, replicas must have the token's write too.
func PreferMaster() ReplicaOption { return ReplicaOption{kind: optPreferMaster} }

// DefaultTokenWait is the default of Config.TokenWait.
const DefaultTokenWait = 100 * time.Millisecond

// resolveAfter turns o's tokens into a MinLSN with FallbackToMaster after
// TokenWait, or an error. It returns the cluster's timeline it resolved the
// tokens against (0 for the zero token). It runs at the start of an acquire,
// and again when the cluster's timeline changed before the acquire ended
// (see acquireAfter), on the acquire's own copy of the options.
func (m *Manager) resolveAfter(ctx context.Context, o *replicaOptions) (uint32, error) {
	o.hasAfter = false
	if o.after.IsZero() {
		return 0, nil
	}
	var aheadUntil time.Time
	for range 1000 { // each round waits for a change of view; bounded anyway
		s := m.snap.Load()
		if s.closed {
			return 0, ErrClosed
		}
		sys, tl := m.clusterLine()
		ahead, done := false, tl != 0 // tl 0: nothing checked yet, wait for the first view
		var lsn LSN
		var lineFrom uint32
		onTL := false
		for i := 0; done && i <= len(o.afterMore); i++ {
			tok := o.after
			if i > 0 {
				tok = o.afterMore[i-1]
			}
			if tok.SystemID != 0 && sys != 0 && tok.SystemID != sys {
				return 0, &TokenError{Token: tok, Err: ErrTokenForeign,
					Detail: fmt.Sprintf("the token's system identifier is %d, the cluster's %d", tok.SystemID, sys)}
			}
			switch {
			case tok.Timeline == tl:
				lsn, onTL = max(lsn, tok.LSN), true
			case tok.Timeline < tl:
				fork, found, err := m.forkPoint(ctx, sys, tl, tok.Timeline)
				if err != nil {
					var te *TokenError
					if errors.As(err, &te) {
						te.Token = tok
					}
					return 0, err
				}
				if !found {
					return 0, &TokenError{Token: tok, Err: ErrWriteLost,
						Detail: fmt.Sprintf("timeline %d is not in the history of the cluster's timeline %d", tok.Timeline, tl)}
				}
				if forkPosition(tok.LSN) > fork {
					return 0, &TokenError{Token: tok, Err: ErrWriteLost,
						Detail: fmt.Sprintf("timeline %d ended at %s, before the token's position %s; the cluster is on timeline %d", tok.Timeline, fork, tok.LSN, tl)}
				}
				// The write lies before the token's timeline ended: a
				// replica past its position on that timeline or a newer
				// one has it, whichever branch it is on.
				lsn, lineFrom = max(lsn, tok.LSN), max(lineFrom, tok.Timeline)
			default: // tok.Timeline > tl
				if aheadUntil.IsZero() {
					aheadUntil = time.Now().Add(2*m.cfg.CheckInterval + m.cfg.CheckTimeout)
					m.wakeForAhead()
				}
				if !time.Now().Before(aheadUntil) {
					return 0, &TokenError{Token: tok, Err: ErrTokenAhead,
						Detail: fmt.Sprintf("the token is on timeline %d, the newest the Manager has seen is %d", tok.Timeline, tl)}
				}
				ahead = true
			}
		}
		if done && !ahead {
			o.requireLSN(lsn, m.cfg.TokenWait)
			// A server of another system has none of the writes (see
			// ofSystem): the cluster's, or, when no check showed it, the
			// tokens' own.
			o.system = sys
			for i := 0; o.system == 0 && i <= len(o.afterMore); i++ {
				if i == 0 {
					o.system = o.after.SystemID
				} else {
					o.system = o.afterMore[i-1].SystemID
				}
			}
			if !onTL {
				// Every token's write lies before its timeline ended: a
				// replica on the newest of their timelines or a newer one
				// has them all.
				o.lineFrom = lineFrom
			}
			o.line = tl
			return tl, nil
		}
		d := time.Until(aheadUntil)
		if aheadUntil.IsZero() {
			d = m.cfg.CheckTimeout + m.cfg.CheckInterval
		}
		if !m.waitChange(ctx, s, max(d, time.Millisecond)) {
			if ctx.Err() != nil {
				return 0, m.noNode(targetReplica, o, ctx.Err())
			}
			if m.ctx.Err() != nil {
				return 0, ErrClosed
			}
		}
	}
	return 0, fmt.Errorf("hasql: After: the view kept changing while the token %s was resolved", o.tokens())
}

// requireLSN makes o ask for lsn, with the master after wait unless o sets
// its own MinLSNWait.
func (o *replicaOptions) requireLSN(lsn LSN, wait time.Duration) {
	o.minLSN = max(o.minLSN, lsn)
	o.fallback = true
	if !o.minLSNWaitSet {
		o.minLSNWait = wait
	}
}

// forkPosition is where a token's position lies for comparison with a
// timeline's end. A token's position is an insert position: when the last
// record ended at a page boundary, it points past the next page's header (24
// bytes, or 40 at a segment's start), while a timeline that ended there ends
// at the boundary itself.
func forkPosition(lsn LSN) LSN {
	if off := lsn % 8192; off == 24 || off == 40 {
		return lsn - off
	}
	return lsn
}

// clusterLine returns the cluster's system identifier and timeline as the
// Manager sees them now: the master's; without a master, the newest of the
// timelines the replicas that serve reads show and the newest a vouched
// node of the cluster has shown (a replica that followed a master now gone
// may show its restartpoint's older timeline: the write of a token of
// that older timeline may be lost). Zeros when neither is known. It reads
// what NodeStatus shows, under m.mu, without building the statuses.
func (m *Manager) clusterLine() (sys uint64, tl uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
nodes:
	for _, n := range m.nodes {
		v := n.cv
		if v == nil || !v.Up && !v.Suspect {
			continue
		}
		switch r := Role(v.Role); {
		case r == RoleMaster:
			sys, tl = v.Res.SystemID, v.Res.Timeline
			break nodes
		case r.IsReplica() && v.Res.Timeline > tl:
			sys, tl = v.Res.SystemID, v.Res.Timeline
		}
	}
	if c := m.core.Cluster(); tl != 0 && c != 0 && (sys == 0 || sys == c) {
		sys, tl = c, max(tl, m.core.Timeline())
	}
	return sys, tl
}

// historySQL reads a timeline's history file; it needs the right to
// pg_read_file (a superuser, pg_read_server_files, or EXECUTE granted).
const historySQL = `SELECT pg_read_file('pg_wal/' || $1::text || '.history')`

// historyCache keeps the timeline histories read, by cluster and timeline:
// a history file never changes once its timeline exists. But two
// promotions can pick one timeline number (a replica that never received
// the first one's history file), so what was read is forgotten whenever
// the master changes. A refusal to read one is kept for historyDeniedFor,
// so that reads with old tokens do not each pay a failing statement. Safe
// for concurrent use.
type historyCache struct {
	mu     sync.Mutex // no I/O while held
	byLine map[historyKey]historyEntry
	gen    uint64 // counts forget calls: a read begun before one is not kept
}

// forget drops every history read so far.
func (h *historyCache) forget() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byLine = nil
	h.gen++
}

type historyKey struct {
	sys uint64
	tl  uint32
}

type historyEntry struct {
	ends   map[uint32]LSN // ancestor timeline -> where it ended
	denied error          // the reading failed for want of a right
	at     time.Time
}

const historyDeniedFor = time.Minute

// forkPoint returns where timeline old ended in the history of the
// cluster's timeline tl, and whether old is an ancestor of tl at all.
func (m *Manager) forkPoint(ctx context.Context, sys uint64, tl, old uint32) (LSN, bool, error) {
	h := &m.histories
	key := historyKey{sys, tl}
	h.mu.Lock()
	e, ok := h.byLine[key]
	gen := h.gen
	h.mu.Unlock()
	if ok && e.denied != nil && time.Since(e.at) < historyDeniedFor {
		return 0, false, forkUnknown(tl, old, e.denied)
	}
	if !ok || e.denied != nil {
		var err error
		if e, err = m.readHistory(ctx, tl); err != nil {
			return 0, false, err
		}
		h.mu.Lock()
		if h.gen == gen {
			if h.byLine == nil {
				h.byLine = make(map[historyKey]historyEntry)
			}
			h.byLine[key] = e
		}
		h.mu.Unlock()
		if e.denied != nil {
			return 0, false, forkUnknown(tl, old, e.denied)
		}
	}
	end, found := e.ends[old]
	return end, found, nil
}

func forkUnknown(tl, old uint32, cause error) error {
	return &TokenError{Err: ErrForkUnknown, Cause: cause,
		Detail: fmt.Sprintf("the token is on timeline %d, the cluster on %d, and the history file %08X.history cannot be read", old, tl, tl)}
}

// readHistory reads timeline tl's history file on a node that has it (the
// master; a replica while there is none), bounded by CheckTimeout. A refusal
// (no right to pg_read_file, no such file) is returned in the entry; other
// errors (a node lost, ctx) as the error.
func (m *Manager) readHistory(ctx context.Context, tl uint32) (historyEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.CheckTimeout)
	defer cancel()
	q := m.Replica()
	if s := m.snap.Load(); s.master != nil && s.masterErr == nil {
		q = m.Master()
	}
	var text string
	err := q.QueryRow(ctx, historySQL, fmt.Sprintf("%08X", tl)).Scan(&text)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42501" || pe.Code == "58P01") {
		return historyEntry{denied: err, at: time.Now()}, nil
	}
	if err != nil {
		return historyEntry{}, fmt.Errorf("hasql: After: reading the history of timeline %d: %w", tl, err)
	}
	ends, err := parseHistory(text)
	if err != nil {
		return historyEntry{}, fmt.Errorf("hasql: After: history of timeline %d: %w", tl, err)
	}
	return historyEntry{ends: ends, at: time.Now()}, nil
}

// maxHistory bounds a timeline history file as read: one line per
// ancestor timeline, a real one a few KiB. A server chooses what it
// answers, and what is read is kept (see historyCache) and quoted.
const maxHistory = 1 << 20

// parseHistory reads a timeline history file: one line per ancestor
// timeline, "<timeline>\t<where it ended>\t<reason>", and comments. A line
// it cannot read is quoted cut to 128 bytes.
func parseHistory(text string) (map[uint32]LSN, error) {
	if len(text) > maxHistory {
		return nil, fmt.Errorf("%d bytes, more than the %d KiB of a timeline history pgxha reads", len(text), maxHistory>>10)
	}
	ends := make(map[uint32]LSN)
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		quoted := safetext.Clip(line, 128)
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("line %q: want <timeline> <lsn> <reason>", quoted)
		}
		// Neither error is wrapped: each quotes the field whole.
		tli, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("line %q: the timeline is not a number", quoted)
		}
		end, err := ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("line %q: not a WAL position", quoted)
		}
		ends[uint32(tli)] = end
	}
	return ends, nil
}

// wakeForAhead asks every node for a check now, for a token of a timeline
// the Manager has not seen (another process may have seen a promotion
// first): at most once per CheckInterval, however many reads bring
// such tokens. A token is input (a cookie, a header): one forged with a
// timeline the cluster never had must not drive the cluster's checks.
func (m *Manager) wakeForAhead() {
	if !onceEvery(&m.aheadWoke, m.cfg.CheckInterval) {
		return
	}
	for _, n := range m.nodesNow() {
		n.trigger()
	}
}
