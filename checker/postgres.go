package checker

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
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

// checkColumns read a node's state; checkFrom names the row they read it
// from, r.rec being pg_is_in_recovery(). CASE keeps the functions that fail
// on the other kind of node (pg_walfile_name on a replica,
// pg_is_wal_replay_paused on a master) from being called. ReadOnly is what
// transaction_read_only is in a new transaction, computed so that it holds
// in a statement whose transaction began before a promotion too (see
// WatchAndCheck).
const (
	checkColumns = `
	r.rec,
	r.rec OR current_setting('default_transaction_read_only')::bool,
	(CASE WHEN r.rec THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::int8,
	(pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::int8,
	pg_last_xact_replay_timestamp(),
	CASE WHEN r.rec THEN pg_is_wal_replay_paused() ELSE false END,
	clock_timestamp(),
	CASE WHEN r.rec THEN coalesce((SELECT received_tli::int8 FROM pg_stat_wal_receiver),
	                              greatest((SELECT timeline_id::int8 FROM pg_control_checkpoint()),
	                                       (SELECT min_recovery_end_timeline::int8 FROM pg_control_recovery())))
	     ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8 END,
	current_setting('cluster_name'),
	(SELECT conninfo FROM pg_stat_wal_receiver),
	CASE WHEN r.rec THEN (SELECT received_tli::int8 FROM pg_stat_wal_receiver) END,
	(SELECT json_agg(json_build_object(
			'p', pid,
			's', state,
			'y', sync_state,
			'sl', (sent_lsn - '0/0'::pg_lsn)::int8,
			'fl', (flush_lsn - '0/0'::pg_lsn)::int8,
			'rl', (replay_lsn - '0/0'::pg_lsn)::int8,
			'lag', (extract(epoch FROM replay_lag) * 1000000)::int8))::text
		FROM pg_stat_get_wal_senders())`
	checkFrom = `FROM (SELECT pg_is_in_recovery() AS rec) r`

	// checkSQL reads a node's state in one statement.
	checkSQL = `SELECT` + checkColumns + "\n" + checkFrom
)

// walsenderSQL names the walsenders: pg_stat_replication's
// application_name and client_addr, which come from the backends' status.
// Reading that status copies every backend's entry, a cost that grows with
// the server's connections (and so, in a fleet, with the number of
// Managers): the check reads pg_stat_get_wal_senders() alone, and this runs
// only when a walsender the connection has not named yet appears.
const walsenderSQL = `SELECT w.pid, s.application_name, host(s.client_addr)
FROM pg_stat_get_wal_senders() w JOIN pg_stat_get_activity(NULL) s ON s.pid = w.pid`

// walsenderNames is the key, in a check connection's CustomData, of the
// names of the walsenders it has seen, by pid (a walsender's name and
// address do not change while it lives).
const walsenderNames = "pgxha.walsenders"

type walsender struct{ app, addr string }

type replicaRow struct {
	PID       *int32  `json:"p"`
	State     *string `json:"s"`
	SyncState *string `json:"y"`
	Sent      *int64  `json:"sl"`
	Flush     *int64  `json:"fl"`
	Replay    *int64  `json:"rl"`
	LagMicros *int64  `json:"lag"`
}

func (postgresChecker) Check(ctx context.Context, conn *pgx.Conn) (Result, error) {
	id, err := serverOf(ctx, conn)
	if err != nil {
		return Result{}, err
	}
	var c checkRow
	if err := conn.QueryRow(ctx, checkSQL).Scan(c.dest()...); err != nil {
		return Result{}, err
	}
	res, err := c.result()
	if err != nil {
		return res, err
	}
	res.SystemID, res.StartTime = id.systemID, id.startTime
	if len(c.pids) == 0 {
		return res, nil
	}
	return res, nameReplicas(ctx, conn, &res, c.pids)
}

// serverSQL reads what does not change while a connection lives: the
// cluster's system identifier (pg_control_system reads the control file)
// and when the postmaster started. It runs once per check connection.
const serverSQL = `SELECT (SELECT system_identifier FROM pg_control_system()), pg_postmaster_start_time()`

// serverIdentity is the key, in a check connection's CustomData, of what
// serverSQL read on it.
const serverIdentity = "pgxha.server"

type server struct {
	systemID  uint64
	startTime time.Time
}

// serverOf returns the server's identity, read on conn's first check.
func serverOf(ctx context.Context, conn *pgx.Conn) (server, error) {
	data := conn.PgConn().CustomData()
	if s, ok := data[serverIdentity].(server); ok {
		return s, nil
	}
	var id *int64
	var start *time.Time
	if err := conn.QueryRow(ctx, serverSQL).Scan(&id, &start); err != nil {
		return server{}, err
	}
	var s server
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
// a walsender is new to it.
func nameReplicas(ctx context.Context, conn *pgx.Conn, res *Result, pids []int32) error {
	data := conn.PgConn().CustomData()
	names, _ := data[walsenderNames].(map[int32]walsender)
	missing := names == nil
	for _, pid := range pids {
		if _, ok := names[pid]; !ok {
			missing = true
		}
	}
	if missing {
		rows, err := conn.Query(ctx, walsenderSQL)
		if err != nil {
			return err
		}
		fresh := make(map[int32]walsender, len(pids))
		for rows.Next() {
			var pid int32
			var app, addr *string
			if err := rows.Scan(&pid, &app, &addr); err != nil {
				rows.Close()
				return err
			}
			fresh[pid] = walsender{app: str(app), addr: str(addr)}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		names = fresh
		data[walsenderNames] = names
	}
	for i, pid := range pids {
		w := names[pid]
		res.Replicas[i].ApplicationName, res.Replicas[i].ClientAddr = w.app, w.addr
	}
	return nil
}

// checkRow receives checkColumns.
type checkRow struct {
	res                 Result
	lsn, receiveLSN     *int64
	replayTime          *time.Time
	timeline            *int64
	clusterName         *string
	receiverConn, repls *string
	receivedTLI         *int64
	pids                []int32 // the walsenders' pids, one per res.Replicas
	// inRecovery, readOnly, replayPaused and serverTime are nullable so that
	// the row of a WatchAndCheck cut short by a promotion (all NULL) scans.
	inRecovery, readOnly, replayPaused *bool
	serverTime                         *time.Time
}

func (c *checkRow) dest() []any {
	return []any{&c.inRecovery, &c.readOnly, &c.lsn, &c.receiveLSN, &c.replayTime, &c.replayPaused,
		&c.serverTime, &c.timeline, &c.clusterName, &c.receiverConn, &c.receivedTLI, &c.repls}
}

func (c *checkRow) result() (Result, error) {
	c.pids = nil
	res := c.res
	if c.inRecovery == nil || c.readOnly == nil || c.serverTime == nil {
		return Result{}, fmt.Errorf("check returned no state")
	}
	res.InRecovery, res.ReadOnly, res.ServerTime = *c.inRecovery, *c.readOnly, *c.serverTime
	res.ReplayPaused = c.replayPaused != nil && *c.replayPaused
	res.LSN = lsnOf(c.lsn)
	res.ReceiveLSN = lsnOf(c.receiveLSN)
	if c.replayTime != nil {
		res.ReplayTime = *c.replayTime
	}
	if c.timeline != nil && *c.timeline > 0 {
		res.Timeline = uint32(*c.timeline)
	}
	if c.receivedTLI != nil && *c.receivedTLI > 0 && *c.receivedTLI <= math.MaxUint32 {
		res.ReceiveTimeline = uint32(*c.receivedTLI)
	}
	res.Name = str(c.clusterName)
	if c.receiverConn != nil {
		res.UpstreamHost = ConnInfoValue(*c.receiverConn, "host")
		if port, err := strconv.ParseUint(ConnInfoValue(*c.receiverConn, "port"), 10, 16); err == nil {
			res.UpstreamPort = uint16(port)
		}
		if app := ConnInfoValue(*c.receiverConn, "application_name"); app != "" {
			res.Name = app
		}
	}
	if c.repls != nil {
		var rows []replicaRow
		if err := json.Unmarshal([]byte(*c.repls), &rows); err != nil {
			return Result{}, fmt.Errorf("decode pg_stat_replication: %w", err)
		}
		res.Replicas = make([]Replica, 0, len(rows))
		c.pids = c.pids[:0]
		for _, r := range rows {
			pid := int32(0)
			if r.PID != nil {
				pid = *r.PID
			}
			c.pids = append(c.pids, pid)
			rep := Replica{
				State:     str(r.State),
				SyncState: str(r.SyncState),
				SentLSN:   lsnOf(r.Sent),
				FlushLSN:  lsnOf(r.Flush),
				ReplayLSN: lsnOf(r.Replay),
			}
			if r.LagMicros != nil {
				rep.ReplayLag, rep.HasReplayLag = time.Duration(*r.LagMicros)*time.Microsecond, true
			}
			res.Replicas = append(res.Replicas, rep)
		}
	}
	return res, nil
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

// ConnInfoValue returns the value of key in a libpq keyword/value conninfo
// string such as pg_stat_wal_receiver.conninfo, or "" when absent. Values may
// be single-quoted with backslash escapes.
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
			end := strings.IndexAny(s, " \t\n\r")
			if end < 0 {
				end = len(s)
			}
			v.WriteString(s[:end])
			s = s[end:]
		}
		if k == key {
			return v.String()
		}
	}
}
