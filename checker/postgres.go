package checker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// PostgreSQL returns the checker for PostgreSQL 12 and newer. It reads
// everything in one round trip. The check user sees replicas' details in
// pg_stat_replication (sync_state, addresses, LSNs) and the walreceiver's
// conninfo and timeline only as a superuser or with the pg_monitor role;
// without them the rows still name the replicas, their sync state is
// reported as unknown (SyncState ""), and a replica's timeline is that of
// its last restartpoint (ReceiveTimeline 0).
func PostgreSQL() Checker { return postgresChecker{} }

type postgresChecker struct{}

// A check reads a node's state in one statement, r.rec being
// pg_is_in_recovery() (evaluated once) and r.w the walreceiver, if any (one
// call of pg_stat_get_wal_receiver(), NULL without one). CASE
// keeps the functions that fail on the other kind of node (pg_walfile_name
// on a replica, pg_is_wal_replay_paused on a master) from being called.
// ReadOnly is what transaction_read_only is in a new transaction.
//
// What a check costs the server is mostly per column and per plan node,
// so it reads what rarely changes only when it may have: a master's
// timeline ($1) when the connection has not seen this server as a master
// yet (a server's timeline changes only when it leaves recovery, and a
// restart ends the connection); a replica's walsenders (a cascade) at
// every check while it has any, and otherwise every cascadeEvery checks;
// a master's (which say which replicas follow it and which are
// synchronous) when they may have changed: at the connection's first
// check, when the caller asks (ReadAll: the Manager does when a replica's
// own check changed), when synchronous_standby_names changed, at every
// check while a walsender is not streaming yet, and otherwise every
// sendersEvery checks (Result.ReplicasCached says a check reused them);
// no walreceiver, receive or replay position or clock on a master (the
// statement is chosen by what the node was at the connection's last
// check, and a node found to have changed kind is read again whole at
// once); cluster_name and the identity once per
// connection (see serverSQL); a replica's timeline from its control data
// only when no walreceiver reports one (see fallbackTimelineSQL). LSNs come
// as pg_lsn text, the walsenders as one string (see parseWalsenders):
// cheaper to make than numeric arithmetic and JSON.
const (
	checkColumns = `
	r.rec,
	r.rec OR current_setting('default_transaction_read_only')::bool,
	CASE WHEN r.rec THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
	pg_last_wal_receive_lsn(),
	pg_last_xact_replay_timestamp(),
	CASE WHEN r.rec THEN pg_is_wal_replay_paused() ELSE false END,
	clock_timestamp(),` + timelineColumns
	// masterColumns are checkColumns with what only a replica has left out:
	// the receive position, the replay timestamp and pause, and the server's
	// clock (which only a replica's replay timestamp is measured against).
	masterColumns = `
	r.rec,
	r.rec OR current_setting('default_transaction_read_only')::bool,
	CASE WHEN r.rec THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
	NULL::text, NULL::timestamptz, false, NULL::timestamptz,` + timelineColumns
	timelineColumns = `
	CASE WHEN NOT r.rec AND $1::bool THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8 END,
	pg_postmaster_start_time(),`
	// The walreceiver is a column of r, a composite value whose fields
	// the statement selects: one call of the function, without the cost of
	// a function scan (which materializes its row).
	// received_tli is 0 for a walreceiver whose details the check user
	// may not see: the pid alone shows (status, never NULL otherwise, is
	// hidden with the rest).
	receiverColumns = `
	(r.w).conninfo,
	CASE WHEN r.rec THEN coalesce((r.w).received_tli, CASE WHEN (r.w).pid IS NOT NULL AND (r.w).status IS NULL THEN 0 END) END,`
	sendersColumn = `
	(SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', pid, state, sync_state, sent_lsn, flush_lsn, replay_lsn,
			(date_part('epoch', replay_lag) * 1000000)::int8), ';') FROM pg_stat_get_wal_senders())`
	// syncNamesColumn is synchronous_standby_names on a master: a change
	// has the walsenders read again at once.
	syncNamesColumn = `,
	current_setting('synchronous_standby_names')`
	fromRec      = "\nFROM (SELECT pg_is_in_recovery() AS rec) r"
	fromRecAndWR = "\nFROM (SELECT pg_is_in_recovery() AS rec, pg_stat_get_wal_receiver() AS w) r"

	// checkSQL reads everything: the first check on a connection, and
	// whenever the node may have changed kind.
	checkSQL = "SELECT" + checkColumns + receiverColumns + sendersColumn + `,
	CASE WHEN NOT r.rec THEN current_setting('synchronous_standby_names') END` + fromRecAndWR
	// masterCheckSQL leaves out what a master has not: the walreceiver,
	// the receive and replay positions.
	masterCheckSQL = "SELECT" + masterColumns + "\n\tNULL::text, NULL::int4," + sendersColumn + syncNamesColumn + fromRec
	// masterQuietSQL is masterCheckSQL without the walsenders, for a
	// master whose walsenders are not due (see sendersEvery).
	masterQuietSQL = "SELECT" + masterColumns + "\n\tNULL::text, NULL::int4, NULL::text" + syncNamesColumn + fromRec
	// replicaCheckSQL leaves out the walsenders, for a replica that had
	// none at its last look (see cascadeEvery).
	replicaCheckSQL = "SELECT" + checkColumns + receiverColumns + "\n\tNULL::text, NULL::text" + fromRecAndWR
)

// fallbackTimelineSQL reads a replica's timeline when no walreceiver
// reports one (or the check user may not see it): the newest of its last
// restartpoint's and its minimum recovery point's, which can be older than
// the WAL it replays.
const fallbackTimelineSQL = `SELECT greatest((SELECT timeline_id::int8 FROM pg_control_checkpoint()),
	(SELECT min_recovery_end_timeline::int8 FROM pg_control_recovery()))`

// historySQL reads the newest timeline whose history file is in a
// replica's pg_wal: a timeline of the cluster that exists (a promotion
// wrote it, and the replica fetched it from its upstream or an archive),
// although the replica's control data may show an older one until its
// next restartpoint. pg_ls_waldir needs pg_monitor (or a superuser).
const historySQL = `SELECT max(('x' || substr(name, 1, 8))::bit(32)::int8) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{8}\.history$'`

// historyKey is the key, in a check connection's CustomData, of what
// historySQL read on it (see historyEvery).
const historyKey = "pgxha.history"

// historyEvery is how many checks without a walreceiver read the history
// files once: the first such check on a connection, then every
// historyEvery-th (the listing of pg_wal costs the server a directory
// read, and a newer timeline appears at a promotion only).
const historyEvery = 10

type historyState struct {
	timeline uint32
	denied   bool // the check user may not list pg_wal: not asked again on this connection
	since    int  // checks since the last read
}

// historyTimeline returns the newest timeline whose history file a
// replica holds (0: none, or the check user may not list pg_wal), read on
// conn at most once in historyEvery checks.
func historyTimeline(ctx context.Context, conn *pgx.Conn) (uint32, error) {
	data := conn.PgConn().CustomData()
	h, ok := data[historyKey].(historyState)
	switch {
	case ok && h.denied:
		return 0, nil
	case ok && h.since < historyEvery-1:
		h.since++
		data[historyKey] = h
		return h.timeline, nil
	}
	var tl *int64
	err := conn.QueryRow(ctx, historySQL).Scan(&tl)
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && pe.Code == "42501":
		data[historyKey] = historyState{denied: true}
		return 0, nil
	case err != nil:
		return 0, err
	}
	h = historyState{}
	if tl != nil && *tl > 0 && *tl <= math.MaxUint32 {
		h.timeline = uint32(*tl)
	}
	data[historyKey] = h
	return h.timeline, nil
}

// masterTimeline is the key, in a check connection's CustomData, of the
// timeline of the server as a master, read on the connection's first check
// that found it out of recovery (0: not read yet, or the server was in
// recovery at the last check).
const masterTimeline = "pgxha.timeline"

// cascadeKey is the key, in a check connection's CustomData, of the number
// of checks since a replica's walsenders were last read; quietKey, of how
// many reads in a row found none. A replica's walsenders are read at every
// check until quietBefore reads in a row found none (a downstream replica
// that reconnects is missing for a moment), then every cascadeEvery checks.
const (
	cascadeKey  = "pgxha.cascade"
	quietKey    = "pgxha.quiet"
	quietBefore = 3
)

// kindKey is the key, in a check connection's CustomData, of what the
// node was at the connection's last check: kindMaster or kindReplica.
const kindKey = "pgxha.kind"

const (
	kindMaster  = 1
	kindReplica = 2
)

// cascadeEvery is how often the walsenders of a replica that had none at
// its last reads are read: a replica that begins to cascade is seen within
// as many checks.
const cascadeEvery = 8

// sendersKey is the key, in a check connection's CustomData, of the
// master's walsenders as last read (a *masterSenders).
const sendersKey = "pgxha.senders"

// sendersEvery is how often a master's walsenders are read when nothing
// says they may have changed (see checkColumns): what a foreign standby,
// or a change the replicas' own checks do not show, does to them is seen
// within as many checks.
const sendersEvery = 4

// masterSenders is what a master's last walsender read found, for the
// checks that reuse it.
type masterSenders struct {
	replicas  []Replica // named (see nameReplicas)
	syncNames string    // synchronous_standby_names then
	since     int       // checks since
	settled   bool      // every walsender was streaming (or hides its state)
}

// walsenderSQL names the walsenders: pg_stat_replication's
// application_name and client_addr, which come from the backends' status.
// Reading that status copies every backend's entry, a cost that grows with
// the server's connections (and so, in a fleet, with the number of
// Managers): the check reads pg_stat_get_wal_senders() alone, and this runs
// only when a walsender the connection has not named yet appears.
const walsenderSQL = `SELECT w.pid, s.application_name, host(s.client_addr)
FROM pg_stat_get_wal_senders() w JOIN pg_stat_get_activity(NULL) s ON s.pid = w.pid`

// walsenderNames is the key, in a check connection's CustomData, of the
// names of the walsenders of its last read, by pid (a walsender's name and
// address do not change while it lives; see nameReplicas for a pid that
// another walsender takes).
const walsenderNames = "pgxha.walsenders"

type walsender struct {
	app, addr string
	sent      LSN // as of the last read
}

func (postgresChecker) Check(ctx context.Context, conn *pgx.Conn) (Result, error) {
	res, err := check(ctx, conn)
	if err == errOtherServer {
		// The connection reaches another server than it did (a pooler
		// whose target moved): nothing remembered of the old one holds.
		forget(conn)
		res, err = check(ctx, conn)
		if err == errOtherServer {
			err = errors.New("check: the server behind the connection keeps changing")
		}
	}
	return res, err
}

// errOtherServer: the server's start time is not the one the connection
// read first.
var errOtherServer = errors.New("check: another server")

// forget drops what the connection remembered of its server.
func forget(conn *pgx.Conn) {
	data := conn.PgConn().CustomData()
	for _, k := range []string{serverIdentity, masterTimeline, kindKey, cascadeKey, quietKey, walsenderNames, sendersKey} {
		delete(data, k)
	}
}

func check(ctx context.Context, conn *pgx.Conn) (Result, error) {
	id, err := serverOf(ctx, conn)
	if err != nil {
		return Result{}, err
	}
	data := conn.PgConn().CustomData()
	tl, _ := data[masterTimeline].(uint32)
	since, _ := data[cascadeKey].(int)
	quietReads, _ := data[quietKey].(int)
	senders, _ := data[sendersKey].(*masterSenders)
	sql := checkSQL
	switch kind, _ := data[kindKey].(int); {
	case kind == kindMaster && senders != nil && senders.settled && senders.since < sendersEvery-1 && !readAll(ctx):
		sql = masterQuietSQL
	case kind == kindMaster:
		sql = masterCheckSQL
	case kind == kindReplica && quietReads >= quietBefore && since < cascadeEvery-1:
		sql = replicaCheckSQL
	}
	c := checkRow{sql: sql}
	if err := conn.QueryRow(ctx, sql, tl == 0).Scan(c.dest()...); err != nil {
		return Result{}, err
	}
	if c.startTime == nil || !c.startTime.Equal(id.startTime) {
		return Result{}, errOtherServer
	}
	switch {
	case sql != checkSQL && c.inRecovery != nil && *c.inRecovery != (sql == replicaCheckSQL):
		// It changed kind since the last check: read it whole.
		sql = checkSQL
	case sql == masterQuietSQL && (c.syncNames == nil || *c.syncNames != senders.syncNames):
		// synchronous_standby_names changed: the walsenders' sync states
		// may have.
		sql = masterCheckSQL
	}
	if sql != c.sql {
		c = checkRow{sql: sql}
		if err := conn.QueryRow(ctx, sql, tl == 0).Scan(c.dest()...); err != nil {
			return Result{}, err
		}
		if c.startTime == nil || !c.startTime.Equal(id.startTime) {
			return Result{}, errOtherServer // a pooler's target moved in between
		}
	}
	res, err := c.result()
	if err != nil {
		return res, err
	}
	if sql == masterQuietSQL && !res.InRecovery {
		senders.since++
		res.Replicas, res.ReplicasCached = slices.Clone(senders.replicas), true
	}
	res.SystemID, res.StartTime, res.Name, res.WalSegmentSize = id.systemID, id.startTime, id.clusterName, id.walSegment
	if c.receiverConn != nil {
		if app := receiverConnInfoValue(*c.receiverConn, "application_name"); app != "" {
			res.Name = app
		}
	}
	res.Name = walsenderName(res.Name, conn.PgConn().ParameterStatus("server_version"))
	switch {
	case !res.InRecovery:
		data[kindKey] = kindMaster
		delete(data, cascadeKey)
		delete(data, quietKey)
		if !res.ReplicasCached {
			delete(data, sendersKey) // until they are named below
		}
	case sql == checkSQL:
		data[kindKey] = kindReplica
		data[cascadeKey] = 0
		if c.repls != nil {
			data[quietKey] = 0 // it cascades: read them at every check
		} else {
			data[quietKey] = quietReads + 1
		}
	default:
		data[cascadeKey] = since + 1
	}
	switch {
	case !res.InRecovery && res.Timeline != 0:
		data[masterTimeline] = res.Timeline
	case !res.InRecovery:
		res.Timeline = tl
	default:
		delete(data, masterTimeline)
		if res.Timeline == 0 {
			var fallback *int64
			if err := conn.QueryRow(ctx, fallbackTimelineSQL).Scan(&fallback); err != nil {
				return Result{}, err
			}
			if fallback != nil && *fallback > 0 && *fallback <= math.MaxUint32 {
				res.Timeline = uint32(*fallback)
			}
			// Only without a walreceiver: one that runs hidden from
			// the check user streams (see Result.HistoryTimeline).
			if !res.ReceiverHidden {
				tl, err := historyTimeline(ctx, conn)
				if err != nil {
					return Result{}, err
				}
				res.HistoryTimeline = tl
			}
		}
	}
	if len(c.pids) != 0 || sql == checkSQL || sql == masterCheckSQL {
		// The walsenders were read (none, or these).
		if err := nameReplicas(ctx, conn, &res, c.pids, readNames(ctx)); err != nil {
			return Result{}, err
		}
	}
	if !res.InRecovery && !res.ReplicasCached {
		ms := &masterSenders{replicas: slices.Clone(res.Replicas), settled: true}
		if c.syncNames != nil {
			ms.syncNames = *c.syncNames
		} else {
			ms.settled = false // not read: read them again next time
		}
		if senders != nil && senders.syncNames != ms.syncNames {
			// The setting changed: each walsender applies it when it
			// takes the reload, which may be after this read.
			ms.settled = false
		}
		for _, r := range res.Replicas {
			// "": hidden from a check user without pg_monitor, and so
			// is the sync state, which therefore cannot change.
			ms.settled = ms.settled && (r.State == "streaming" || r.State == "")
		}
		data[sendersKey] = ms
	}
	return res, nil
}

// serverSQL reads what does not change while a connection lives: the
// cluster's system identifier (pg_control_system reads the control file),
// when the postmaster started, its cluster_name (set at start) and its WAL
// segment size (set at initdb). It runs once per check connection.
const serverSQL = `SELECT (SELECT system_identifier FROM pg_control_system()), pg_postmaster_start_time(), current_setting('cluster_name'),
	pg_size_bytes(current_setting('wal_segment_size'))`

// serverIdentity is the key, in a check connection's CustomData, of what
// serverSQL read on it.
const serverIdentity = "pgxha.server"

type server struct {
	systemID    uint64
	startTime   time.Time
	clusterName string
	walSegment  int64
}

// serverOf returns the server's identity, read on conn's first check.
func serverOf(ctx context.Context, conn *pgx.Conn) (server, error) {
	data := conn.PgConn().CustomData()
	if s, ok := data[serverIdentity].(server); ok {
		return s, nil
	}
	var id *int64
	var start *time.Time
	var name *string
	var seg *int64
	if err := conn.QueryRow(ctx, serverSQL).Scan(&id, &start, &name, &seg); err != nil {
		return server{}, err
	}
	s := server{clusterName: str(name)}
	if seg != nil && *seg > 0 {
		s.walSegment = *seg
	}
	if id != nil {
		s.systemID = uint64(*id)
	}
	if start != nil {
		s.startTime = *start
	}
	data[serverIdentity] = s
	return s, nil
}

// nameReplicas fills in the replicas' application names and addresses from
// the connection's record of walsenders, reading them from the server when
// a walsender is new to it, or when asked (rename: see ReadNames). pids are
// the walsenders of a read (none: the server has none now). The record
// holds the pids of the last read only, so that the next walsender given
// a pid is named afresh. A pid may change hands between two reads: the
// walsenders are named afresh too when one of the last read is gone (the
// replica it served, if it streams again, may have its pid now), and when
// one's WAL sent went back (a walsender only sends forward: another took
// the pid).
func nameReplicas(ctx context.Context, conn *pgx.Conn, res *Result, pids []int32, rename bool) error {
	data := conn.PgConn().CustomData()
	names, _ := data[walsenderNames].(map[int32]walsender)
	missing := names == nil || rename
	listed := make(map[int32]struct{}, len(pids))
	for i, pid := range pids {
		listed[pid] = struct{}{}
		if w, ok := names[pid]; !ok || res.Replicas[i].SentLSN < w.sent {
			missing = true
		}
	}
	for pid := range names {
		if _, ok := listed[pid]; !ok {
			missing = true // one left: a listed pid may be another's now
		}
	}
	missing = missing && len(pids) > 0
	if missing {
		rows, err := conn.Query(ctx, walsenderSQL)
		if err != nil {
			return err
		}
		fresh := make(map[int32]walsender, len(pids))
		read := 0
		for rows.Next() {
			// One row per walsender: more than the bound is a server
			// that lies (see MaxWalsenders); rows of walsenders not in
			// the list are not kept.
			if read++; read > MaxWalsenders {
				rows.Close()
				return fmt.Errorf("read walsender names: more than %d rows", MaxWalsenders)
			}
			var pid int32
			var app, addr *string
			if err := rows.Scan(&pid, &app, &addr); err != nil {
				rows.Close()
				return err
			}
			if _, ok := listed[pid]; ok {
				fresh[pid] = walsender{app: str(app), addr: str(addr)}
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		names = fresh
		data[walsenderNames] = names
	}
	for pid := range names {
		if _, ok := listed[pid]; !ok {
			delete(names, pid)
		}
	}
	for i, pid := range pids {
		w := names[pid]
		res.Replicas[i].ApplicationName, res.Replicas[i].ClientAddr = w.app, w.addr
		if _, ok := names[pid]; ok {
			w.sent = res.Replicas[i].SentLSN
			names[pid] = w
		}
	}
	return nil
}

// checkRow receives checkSQL's columns.
type checkRow struct {
	res                 Result
	lsn, receiveLSN     *string
	replayTime          *time.Time
	timeline            *int64
	receiverConn, repls *string
	receivedTLI         *int64
	pids                []int32 // the walsenders' pids, one per res.Replicas
	// inRecovery, readOnly, replayPaused and serverTime are nullable so
	// that a row without them is an error, not a panic.
	inRecovery, readOnly, replayPaused *bool
	serverTime                         *time.Time
	startTime                          *time.Time // pg_postmaster_start_time()
	syncNames                          *string    // synchronous_standby_names on a master
	sql                                string     // the statement that filled the row
}

func (c *checkRow) dest() []any {
	return []any{&c.inRecovery, &c.readOnly, &c.lsn, &c.receiveLSN, &c.replayTime, &c.replayPaused,
		&c.serverTime, &c.timeline, &c.startTime, &c.receiverConn, &c.receivedTLI, &c.repls, &c.syncNames}
}

func (c *checkRow) result() (Result, error) {
	c.pids = nil
	res := c.res
	if c.inRecovery == nil || c.readOnly == nil || c.serverTime == nil && *c.inRecovery {
		return Result{}, fmt.Errorf("check returned no state")
	}
	res.InRecovery, res.ReadOnly = *c.inRecovery, *c.readOnly
	if c.serverTime != nil {
		res.ServerTime = *c.serverTime
	}
	res.ReplayPaused = c.replayPaused != nil && *c.replayPaused
	var err error
	if res.LSN, err = lsnText(c.lsn); err != nil {
		return Result{}, err
	}
	if res.ReceiveLSN, err = lsnText(c.receiveLSN); err != nil {
		return Result{}, err
	}
	if c.replayTime != nil {
		res.ReplayTime = *c.replayTime
	}
	if c.timeline != nil && *c.timeline > 0 && *c.timeline <= math.MaxUint32 {
		res.Timeline = uint32(*c.timeline)
	}
	res.ReceiverHidden = c.receivedTLI != nil && *c.receivedTLI == 0 && res.InRecovery
	if c.receivedTLI != nil && *c.receivedTLI > 0 && *c.receivedTLI <= math.MaxUint32 {
		res.ReceiveTimeline = uint32(*c.receivedTLI)
		if res.InRecovery {
			res.Timeline = res.ReceiveTimeline
		}
	}
	if c.receiverConn != nil {
		res.UpstreamHost = receiverConnInfoValue(*c.receiverConn, "host")
		if port, err := strconv.ParseUint(receiverConnInfoValue(*c.receiverConn, "port"), 10, 16); err == nil {
			res.UpstreamPort = uint16(port)
		}
	}
	if c.repls != nil {
		if res.Replicas, c.pids, err = parseWalsenders(*c.repls); err != nil {
			return Result{}, err
		}
	}
	return res, nil
}

// MaxWalsenders bounds the walsenders a check reads from one server: more
// is an error of the check. PostgreSQL allows max_wal_senders up to
// 262143; a server that reports more than this many is taken for a
// server that lies, whose answer must not cost the Manager more than a
// bounded message does.
const MaxWalsenders = 4096

// parseWalsenders reads checkSQL's walsender column: per walsender, pid,
// state, sync_state, sent, flush and replay LSNs and replay_lag in
// microseconds,
// separated by '|', the walsenders by ';'; a NULL is empty.
func parseWalsenders(s string) ([]Replica, []int32, error) {
	if n := strings.Count(s, ";") + 1; n > MaxWalsenders {
		// Checked before anything is made for them: a list of empty rows
		// would otherwise cost a hundred times its size.
		return nil, nil, fmt.Errorf("decode pg_stat_replication: %d walsenders, more than %d", n, MaxWalsenders)
	}
	var reps []Replica
	var pids []int32
	for row := range strings.SplitSeq(s, ";") {
		f := strings.SplitN(row, "|", 8)
		if len(f) != 7 {
			return nil, nil, fmt.Errorf("decode pg_stat_replication: %d fields in %q, want 7", len(f), row)
		}
		var pid int64
		if f[0] != "" {
			var err error
			if pid, err = strconv.ParseInt(f[0], 10, 32); err != nil {
				return nil, nil, fmt.Errorf("decode pg_stat_replication: pid %q", f[0])
			}
		}
		rep := Replica{State: f[1], SyncState: f[2]}
		for i, dst := range []*LSN{&rep.SentLSN, &rep.FlushLSN, &rep.ReplayLSN} {
			if f[3+i] == "" {
				continue
			}
			l, err := ParseLSN(f[3+i])
			if err != nil {
				return nil, nil, fmt.Errorf("decode pg_stat_replication: %w", err)
			}
			*dst = l
		}
		if f[6] != "" {
			us, err := strconv.ParseInt(f[6], 10, 64)
			if err != nil || us < 0 || us > math.MaxInt64/int64(time.Microsecond) {
				return nil, nil, fmt.Errorf("decode pg_stat_replication: replay_lag %q", f[6])
			}
			rep.ReplayLag, rep.HasReplayLag = time.Duration(us)*time.Microsecond, true
		}
		reps = append(reps, rep)
		pids = append(pids, int32(pid))
	}
	return reps, pids, nil
}

// lsnText parses a pg_lsn column read as text (NULL: 0).
func lsnText(s *string) (LSN, error) {
	if s == nil {
		return 0, nil
	}
	l, err := ParseLSN(*s)
	if err != nil {
		return 0, fmt.Errorf("check: %w", err)
	}
	return l, nil
}

// probeSQL asks a replica whether it left recovery, and when it did, what
// it is as of that instant: read-only or not, the timeline it writes on, its
// WAL position. The subquery runs pg_is_in_recovery() once (a volatile
// function in a subquery's select list keeps it from being pulled up); the
// CASEs keep pg_walfile_name, which fails in recovery, from being called on
// a replica. It reads no table and holds its snapshot for microseconds.
const probeSQL = `SELECT r.rec,
	CASE WHEN NOT r.rec THEN current_setting('default_transaction_read_only')::bool END,
	CASE WHEN NOT r.rec THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8 END,
	CASE WHEN NOT r.rec THEN (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8 END
FROM (SELECT pg_is_in_recovery() AS rec) r`

// ProbePromotion asks a node, in one short statement, whether it is out of
// recovery: nil while it is a replica, else what it said of itself. The
// Manager runs it on replicas every PromotionPoll while the cluster has no
// master or its master is suspect or slow, so that a promotion is seen at
// once without a long statement on the replica (which would hold a snapshot
// and, with hot_standby_feedback off, delay WAL replay).
func ProbePromotion(ctx context.Context, conn *pgx.Conn) (*Promotion, error) {
	var (
		inRecovery, readOnly *bool
		timeline, lsn        *int64
	)
	if err := conn.QueryRow(ctx, probeSQL).Scan(&inRecovery, &readOnly, &timeline, &lsn); err != nil {
		return nil, err
	}
	switch {
	case inRecovery == nil:
		return nil, fmt.Errorf("probe returned no state")
	case *inRecovery:
		return nil, nil
	case readOnly == nil || timeline == nil || lsn == nil || *timeline <= 0 || *timeline > math.MaxUint32 || *lsn < 0:
		return nil, fmt.Errorf("probe: unexpected promotion row")
	}
	return &Promotion{ReadOnly: *readOnly, Timeline: uint32(*timeline), LSN: LSN(*lsn)}, nil
}

func lsnOf(v *int64) LSN {
	if v == nil || *v < 0 {
		return 0
	}
	return LSN(*v)
}

func str(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// receiverConnInfoValue returns the value of key in
// pg_stat_wal_receiver.conninfo, "" when absent. The server writes it as
// "keyword=value" pairs in libpq's order, one space between them, values
// neither quoted nor escaped: a value runs to the next " keyword=" of a
// libpq keyword, or to the end, spaces and backslashes included.
func receiverConnInfoValue(conninfo, key string) string {
	at := -1
	if strings.HasPrefix(conninfo, key+"=") {
		at = 0
	} else if i := strings.Index(conninfo, " "+key+"="); i >= 0 {
		at = i + 1
	}
	if at < 0 {
		return ""
	}
	v := conninfo[at+len(key)+1:]
	end := len(v)
	for i := 0; i < len(v); i++ {
		if v[i] != ' ' {
			continue
		}
		if k, _, ok := strings.Cut(v[i+1:], "="); ok && libpqKeywords[k] {
			end = i
			break
		}
	}
	return v[:end]
}

// libpqKeywords are libpq's connection keywords (PostgreSQL 17's), which
// pg_stat_wal_receiver.conninfo may show.
var libpqKeywords = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range strings.Fields(`service user password passfile channel_binding connect_timeout dbname host
		hostaddr port client_encoding options application_name fallback_application_name keepalives
		keepalives_idle keepalives_interval keepalives_count tcp_user_timeout sslmode sslnegotiation
		sslcompression sslcert sslkey sslcertmode sslpassword sslrootcert sslcrl sslcrldir sslsni
		requirepeer require_auth ssl_min_protocol_version ssl_max_protocol_version gssencmode krbsrvname
		gsslib gssdelegation replication target_session_attrs load_balance_hosts scram_client_key
		scram_server_key max_protocol_version min_protocol_version`) {
		m[k] = true
	}
	return m
}()

// walsenderName returns name as a master of the given server_version
// shows it in pg_stat_replication.application_name: each byte outside
// printable ASCII made '?' (15 and before) or \xNN (16 on), and the whole
// cut to 63 bytes (NAMEDATALEN - 1). The name a replica's walreceiver uses
// is matched against what the master shows.
func walsenderName(name, serverVersion string) string {
	escape := false
	digits := serverVersion // "15.4 (Debian ...)", "18beta1", "19devel": the major is the leading digits
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			digits = digits[:i]
			break
		}
	}
	if major, err := strconv.Atoi(digits); err == nil && major >= 16 {
		escape = true
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c >= 32 && c <= 126:
			b.WriteByte(c)
		case escape:
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			b.WriteByte('?')
		}
	}
	s := b.String()
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}

// ConnInfoValue returns the value of key in a libpq keyword/value conninfo
// string, such as primary_conninfo, or "" when absent. Values may be
// single-quoted; a backslash takes the next character as it is, quoted or
// not (libpq's reading). pg_stat_wal_receiver.conninfo is not written so
// (see receiverConnInfoValue).
func ConnInfoValue(conninfo, key string) string {
	s := conninfo
	for {
		s = strings.TrimLeft(s, " \t\n\r")
		if s == "" {
			return ""
		}
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return ""
		}
		k := strings.TrimSpace(s[:eq])
		s = strings.TrimLeft(s[eq+1:], " \t\n\r")
		var v strings.Builder
		if strings.HasPrefix(s, "'") {
			s = s[1:]
			for len(s) > 0 && s[0] != '\'' {
				if s[0] == '\\' && len(s) > 1 {
					s = s[1:]
				}
				v.WriteByte(s[0])
				s = s[1:]
			}
			if len(s) > 0 {
				s = s[1:]
			}
		} else {
			// As libpq reads it: a backslash takes the next character as
			// it is, a space among them.
			for len(s) > 0 && !strings.ContainsRune(" \t\n\r", rune(s[0])) {
				if s[0] == '\\' && len(s) > 1 {
					s = s[1:]
				}
				v.WriteByte(s[0])
				s = s[1:]
			}
		}
		if k == key {
			return v.String()
		}
	}
}
