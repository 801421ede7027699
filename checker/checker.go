// Package checker finds out what a PostgreSQL node is: master or replica, how
// far its WAL has gone, which replicas stream from it and whether they are
// synchronous. The hasql Manager runs a Checker on a dedicated connection per
// node; the PostgreSQL checker does it in one round trip.
package checker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Checker inspects one node through conn, a connection dedicated to checks
// (never one of the application's). Check must honour ctx, which carries the
// per-check timeout, and must not keep conn busy after it returns.
// Implementations are called from one goroutine per node at a time.
type Checker interface {
	Check(ctx context.Context, conn *pgx.Conn) (Result, error)
}

// Promotion is what a replica that left recovery says of itself at once
// (see ProbePromotion).
type Promotion struct {
	// ReadOnly is default_transaction_read_only: a promoted node that is
	// read-only is not a master.
	ReadOnly bool
	// Timeline is the new timeline it writes on.
	Timeline uint32
	// LSN is pg_current_wal_lsn().
	LSN LSN
}

// Result is what one check found.
type Result struct {
	// InRecovery is pg_is_in_recovery(): true on a replica.
	InRecovery bool
	// ReadOnly is transaction_read_only in a new transaction: true on a
	// replica, and on a primary with default_transaction_read_only on.
	ReadOnly bool
	// LSN is pg_current_wal_lsn() on a master and pg_last_wal_replay_lsn()
	// on a replica: how far the node's visible data has gone.
	LSN LSN
	// ReceiveLSN is pg_last_wal_receive_lsn() on a replica, 0 on a master.
	ReceiveLSN LSN
	// ReplayTime is pg_last_xact_replay_timestamp() on a replica; zero when
	// nothing has been replayed since start-up, and on a master.
	ReplayTime time.Time
	// ReplayPaused reports a replica whose replay was paused
	// (pg_wal_replay_pause).
	ReplayPaused bool
	// ServerTime is clock_timestamp() on a replica, what its ReplayTime is
	// measured against; PostgreSQL's checks of a master may leave it zero.
	ServerTime time.Time
	// Timeline is the node's timeline: of the WAL it writes on a master; on
	// a replica, of the WAL it receives or, with no walreceiver to tell (or
	// none the check user may see), the newest of its last restartpoint's
	// and its minimum recovery point's timelines, which can be older than
	// the WAL it replays.
	Timeline uint32
	// Name is how the node appears in its master's pg_stat_replication: the
	// application_name of its walreceiver (from primary_conninfo), else its
	// cluster_name. Empty when neither is known.
	Name string
	// UpstreamHost and UpstreamPort are, on a replica, where its walreceiver
	// connects (the host and port of its primary_conninfo as
	// pg_stat_wal_receiver shows them): "" and 0 when no walreceiver runs or
	// the check user may not see it.
	UpstreamHost string
	UpstreamPort uint16
	// ReceiveTimeline is, on a replica, the timeline of the WAL its
	// walreceiver last received (pg_stat_wal_receiver.received_tli); 0 when
	// no walreceiver runs or the check user may not see it. Timeline falls
	// back to the last restartpoint's timeline then, which can be older.
	ReceiveTimeline uint32
	// ReceiverHidden reports, on a replica, a walreceiver that runs but
	// whose details the check user may not see (no pg_read_all_stats:
	// pg_stat_wal_receiver shows such a user the pid alone). False when
	// none runs, or when its details show.
	ReceiverHidden bool
	// HistoryTimeline is, on a replica with no walreceiver, the newest
	// timeline whose history file is in its pg_wal: a timeline that exists
	// (a promotion made it), which Timeline, read from its control data
	// then, may not show yet. 0 when unknown (no pg_monitor, a walreceiver
	// runs, shown or hidden, none).
	HistoryTimeline uint32
	// SystemID is pg_control_system().system_identifier: the same on every
	// node of one cluster (replicas are copies of the master), different
	// for a cluster made by another initdb.
	SystemID uint64
	// StartTime is pg_postmaster_start_time(): with SystemID it tells one
	// server from another, so that a server reached through two addresses
	// is known to be one; and every connection of a node's pool is
	// compared with it, so that a name that moved cannot have the pool
	// reach another server than the checks. A checker that leaves it zero
	// leaves the pool's connections uncompared.
	StartTime time.Time
	// WalSegmentSize is the server's wal_segment_size in bytes (set at
	// initdb: 1 MiB to 1 GiB, 16 MiB by default); 0 when unknown. A replica
	// that replayed a WAL switch record reports the end of its segment as
	// its replay position.
	WalSegmentSize int64
	// Replicas lists pg_stat_replication: the replicas that stream from
	// this node (from a master, or from a replica that cascades).
	Replicas []Replica
	// ReplicasCached: Replicas were not read by this check but by an
	// earlier one on the same connection (to the same server), which is
	// what they are as of. The PostgreSQL checker reads a master's
	// walsenders only when they may have changed (see ReadAll); a checker
	// that reads them at every check leaves it false.
	ReplicasCached bool
}

// readAllKey is the context key of ReadAll.
type readAllKey struct{}

// ReadAll returns ctx asking the checker to read everything at this check,
// what it otherwise reads only now and then included: the Manager asks for
// it when a node's check showed something that may change its master's
// walsenders (a replica that connected, went away, restarted or changed
// upstream or timeline).
func ReadAll(ctx context.Context) context.Context {
	return context.WithValue(ctx, readAllKey{}, true)
}

// readAll reports whether ctx asks for a whole read (see ReadAll).
func readAll(ctx context.Context) bool {
	v, _ := ctx.Value(readAllKey{}).(bool)
	return v
}

// readNamesKey is the context key of ReadNames.
type readNamesKey struct{}

// ReadNames returns ctx asking the checker, with ReadAll, to name the
// walsenders afresh (their application names and client addresses, which
// the PostgreSQL checker otherwise reads only for a walsender new to the
// connection, by pid, as they cost the server a read of every backend's
// status): the Manager asks for it when a node's check showed a change
// since the walsenders were last read, so that a pid that another
// walsender took meanwhile is named after the one it serves now.
func ReadNames(ctx context.Context) context.Context {
	return context.WithValue(ctx, readNamesKey{}, true)
}

// readNames reports whether ctx asks to name the walsenders afresh.
func readNames(ctx context.Context) bool {
	v, _ := ctx.Value(readNamesKey{}).(bool)
	return v
}

// ServerID identifies one running server: its cluster's system identifier
// and its postmaster's start time. Two addresses that reach the same server
// have the same ServerID; two servers of one cluster do not. Zero when
// either is unknown.
type ServerID struct {
	SystemID  uint64
	StartTime int64 // unix microseconds
}

// Server returns r's ServerID.
func (r Result) Server() ServerID {
	if r.SystemID == 0 || r.StartTime.IsZero() {
		return ServerID{}
	}
	return ServerID{SystemID: r.SystemID, StartTime: r.StartTime.UnixMicro()}
}

// Replica is one row of a master's pg_stat_replication.
type Replica struct {
	ApplicationName string
	// ClientAddr is the replica's address as the master sees it; empty for
	// a Unix-socket connection.
	ClientAddr string
	// State is the walsender state: startup, catchup, streaming, backup,
	// stopping.
	State string
	// SyncState is async, potential, sync or quorum; "" when the check user
	// may not see it (no pg_monitor).
	SyncState string
	SentLSN   LSN
	FlushLSN  LSN
	ReplayLSN LSN
	// ReplayLag is pg_stat_replication.replay_lag; HasReplayLag is false when
	// it was NULL (the replica is idle and caught up, or has not reported).
	ReplayLag    time.Duration
	HasReplayLag bool
}

// Sync reports whether the master waits for this replica on commit.
func (r Replica) Sync() bool { return r.SyncState == "sync" || r.SyncState == "quorum" }

// LSN is a PostgreSQL write-ahead log location (pg_lsn).
type LSN uint64

// String formats the LSN the way PostgreSQL does: "16/B374D848".
func (l LSN) String() string {
	return strings.ToUpper(strconv.FormatUint(uint64(l)>>32, 16) + "/" + strconv.FormatUint(uint64(l)&0xFFFFFFFF, 16))
}

// ParseLSN parses PostgreSQL's text form of an LSN, "16/B374D848".
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("invalid LSN %q: want the form 16/B374D848", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// MarshalText implements encoding.TextMarshaler.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
