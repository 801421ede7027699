package checker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgreSQL returns the checker for PostgreSQL 12 and newer. It reads
// everything in one round trip. The check user sees replicas' details in
// pg_stat_replication and the walreceiver's conninfo only as a superuser or
// with the pg_monitor role; without them replicas cannot be told sync from
// async and are reported async.
func PostgreSQL() Checker { return postgresChecker{} }

type postgresChecker struct{}

// checkSQL reads a node's state in one statement. CASE keeps the functions
// that fail on the other kind of node (pg_walfile_name on a replica,
// pg_is_wal_replay_paused on a master) from being called.
const checkSQL = `SELECT
	r.rec,
	current_setting('transaction_read_only')::bool,
	(CASE WHEN r.rec THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::int8,
	(pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::int8,
	pg_last_xact_replay_timestamp(),
	CASE WHEN r.rec THEN pg_is_wal_replay_paused() ELSE false END,
	clock_timestamp(),
	CASE WHEN r.rec THEN coalesce((SELECT received_tli::int8 FROM pg_stat_wal_receiver),
	                              (SELECT timeline_id::int8 FROM pg_control_checkpoint()))
	     ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8 END,
	current_setting('cluster_name'),
	(SELECT conninfo FROM pg_stat_wal_receiver),
	CASE WHEN r.rec THEN NULL ELSE (
		SELECT json_agg(json_build_object(
			'a', application_name,
			'c', host(client_addr),
			's', state,
			'y', sync_state,
			'sl', (sent_lsn - '0/0'::pg_lsn)::int8,
			'fl', (flush_lsn - '0/0'::pg_lsn)::int8,
			'rl', (replay_lsn - '0/0'::pg_lsn)::int8,
			'lag', (extract(epoch FROM replay_lag) * 1000000)::int8))::text
		FROM pg_stat_replication) END
FROM (SELECT pg_is_in_recovery() AS rec) r`

type replicaRow struct {
	App       *string `json:"a"`
	Addr      *string `json:"c"`
	State     *string `json:"s"`
	SyncState *string `json:"y"`
	Sent      *int64  `json:"sl"`
	Flush     *int64  `json:"fl"`
	Replay    *int64  `json:"rl"`
	LagMicros *int64  `json:"lag"`
}

func (postgresChecker) Check(ctx context.Context, conn *pgx.Conn) (Result, error) {
	var (
		res                 Result
		lsn, receiveLSN     *int64
		replayTime          *time.Time
		timeline            *int64
		clusterName         string
		receiverConn, repls *string
	)
	err := conn.QueryRow(ctx, checkSQL).Scan(
		&res.InRecovery, &res.ReadOnly, &lsn, &receiveLSN, &replayTime, &res.ReplayPaused,
		&res.ServerTime, &timeline, &clusterName, &receiverConn, &repls)
	if err != nil {
		return Result{}, err
	}
	res.LSN = lsnOf(lsn)
	res.ReceiveLSN = lsnOf(receiveLSN)
	if replayTime != nil {
		res.ReplayTime = *replayTime
	}
	if timeline != nil && *timeline > 0 {
		res.Timeline = uint32(*timeline)
	}
	res.Name = clusterName
	if receiverConn != nil {
		if app := ConnInfoValue(*receiverConn, "application_name"); app != "" {
			res.Name = app
		}
	}
	if repls != nil {
		var rows []replicaRow
		if err := json.Unmarshal([]byte(*repls), &rows); err != nil {
			return Result{}, fmt.Errorf("decode pg_stat_replication: %w", err)
		}
		res.Replicas = make([]Replica, 0, len(rows))
		for _, r := range rows {
			rep := Replica{
				ApplicationName: str(r.App),
				ClientAddr:      str(r.Addr),
				State:           str(r.State),
				SyncState:       str(r.SyncState),
				SentLSN:         lsnOf(r.Sent),
				FlushLSN:        lsnOf(r.Flush),
				ReplayLSN:       lsnOf(r.Replay),
			}
			if r.LagMicros != nil {
				rep.ReplayLag, rep.HasReplayLag = time.Duration(*r.LagMicros)*time.Microsecond, true
			}
			res.Replicas = append(res.Replicas, rep)
		}
	}
	return res, nil
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
