package hasql

import (
	"time"

	"github.com/pgxha/pgxha/checker"
	"github.com/pgxha/pgxha/hasql/internal/topology"
)

// Role is what a node is to the manager.
type Role int

const (
	// RoleUnknown: the node is down, not checked yet, or writable but not
	// used (a split brain; see NodeStatus.SplitBrain).
	RoleUnknown Role = iota
	// RoleMaster: the writable node that gets writes.
	RoleMaster
	// RoleSyncReplica: a replica the master waits for on every commit
	// (sync_state sync in the master's pg_stat_replication). Quorum
	// candidates are RoleQuorumReplica, not this.
	RoleSyncReplica
	// RoleAsyncReplica: a replica that follows the master and that the
	// master does not wait for (sync_state async or potential).
	RoleAsyncReplica
	// RoleQuorumReplica: a replica that is one of the candidates of a
	// quorum (synchronous_standby_names = 'ANY k (...)', sync_state
	// quorum): the master waits for k of them, so a given one may not have
	// a commit yet. SyncOnly does not take it.
	RoleQuorumReplica
	// RoleReplica: a replica that follows the master but whose sync state
	// cannot be known (see NodeStatus.SyncUnknown): serves plain reads,
	// never SyncOnly ones.
	RoleReplica
	// RoleDetached: a replica that does not follow the current master (another
	// timeline or cluster, ahead of the master, not streaming from it; see
	// NodeStatus.Detached). It serves no reads.
	RoleDetached
	// RoleStaleMaster: a writable node on a timeline older than the newest
	// the Manager has seen in the cluster. It gets no writes (see
	// StaleMasterError and Manager.ForgetTimeline).
	RoleStaleMaster
)

// String returns "unknown", "master", "sync", "async", "quorum",
// "replica", "detached" or "stale".
func (r Role) String() string { return topology.Role(r).String() }

// IsReplica reports whether r is a replica that follows the master and
// serves reads: sync, async, quorum or replica (sync unknown). A detached
// replica is not.
func (r Role) IsReplica() bool { return topology.Role(r).IsReplica() }

// LSN is a PostgreSQL write-ahead log location, as pg_lsn: "16/B374D848".
type LSN = checker.LSN

// ParseLSN parses the text form of an LSN.
func ParseLSN(s string) (LSN, error) { return checker.ParseLSN(s) }

// NodeStatus is the manager's view of one node.
type NodeStatus struct {
	// Addr is "host:port" as written in the connection string.
	Addr string
	// Name is the node's name in its master's pg_stat_replication (its
	// walreceiver's application_name or cluster_name), when known.
	Name string
	// Role is the node's role for routing.
	Role Role
	// Up reports a node whose last check succeeded, or that is suspect
	// (one check timed out, a second one would put it down).
	Up bool
	// Suspect reports a node whose last check timed out: it gets no new
	// reads while other replicas qualify, and is marked down if the next
	// check times out too.
	Suspect bool
	// Writable reports a node that was not in recovery and not read-only at
	// its last check. A writable node that is not the master is a split
	// brain.
	Writable bool
	// SplitBrain reports a writable node while another node is writable too.
	SplitBrain bool
	// SyncState is the node's sync_state in the master's
	// pg_stat_replication (sync, quorum, potential, async), or "" when the
	// master does not list it or does not show it. While no master is
	// known it is what the last one said, and a replica it called sync
	// or quorum has RoleReplica (SyncUnknown says so); "" when the node
	// went down, another server (a restart) answered, or it followed a
	// newer timeline since.
	SyncState string
	// SyncUnknown says why a replica's sync state cannot be known (its
	// name is on two walsender rows, the check user lacks pg_monitor, no
	// master is known, the master's walsenders were last read before it
	// came back up, ...); "" when it is known. Such a replica has
	// RoleReplica.
	SyncUnknown string
	// Detached says why a replica does not follow the current master (and
	// serves no reads); "" when it does. Its role is RoleDetached.
	Detached string
	// Waiting says why a writable node the Manager may elect is not master
	// yet (its role is RoleUnknown for that while): the decision waits for
	// a check that settles it, such as the first check of every node of
	// the connection string at the start, or a later check of this node
	// when a replica showed WAL past its position at a check that may have
	// read it later. "" when the node waits for nothing.
	Waiting string
	// Damped reports a node that flapped (came back up Config.FlapCount
	// times within FlapWindow): it serves no reads until DampedUntil. It
	// stays eligible as master.
	Damped      bool
	DampedUntil time.Time
	// StaleMaster reports a writable node on an older timeline than the
	// newest the Manager has seen in the cluster, or behind a replica
	// (role RoleStaleMaster).
	StaleMaster bool
	// StaleBehind is, for a stale master, the address of the replica that
	// holds WAL of the node's own timeline it never wrote (see
	// StaleMasterError.Behind); "" for one on an older timeline.
	StaleBehind string
	// SameAs is the address of the node this one reaches the same server
	// as (a virtual IP and the server's own address, say); "" otherwise. It
	// has that node's role and gets no connections of its own.
	SameAs string
	// SystemID is the node's cluster's system identifier, 0 when unknown.
	SystemID uint64
	// Tags are the node's tags from its discoverer (Patroni's
	// noloadbalance, nofailover, a zone, ...); nil when it has none.
	Tags map[string]string
	// Timeline is the node's timeline at its last check.
	Timeline uint32
	// LSN is the node's WAL position at its last check: current on a
	// master, replayed on a replica. ReceiveLSN is what a replica received.
	LSN        LSN
	ReceiveLSN LSN
	// ReplayPaused reports a replica whose WAL replay is paused.
	ReplayPaused bool
	// LagBytes and Lag are a replica's replication lag behind the master:
	// bytes of WAL not yet replayed, and how old the oldest data it has not
	// replayed is. LagKnown is false unless both can be measured: a master
	// is known now and, while WAL is pending, the master's replay_lag,
	// the Manager's record of the master's positions or the replica's last
	// replay timestamp (which bounds it from above) tells the time; an
	// unknown lag never qualifies under a lag limit. LagAt is when they
	// were measured, or found unknown (both 0 then: while there is no
	// master, what the replica was behind before says nothing of now).
	LagBytes int64
	Lag      time.Duration
	LagKnown bool
	LagAt    time.Time
	// LastCheck is when the last check finished; CheckLatency is how long it
	// took (connecting included, if it had to).
	LastCheck    time.Time
	CheckLatency time.Duration
	// LastError is the error of the last check, or of the last failed
	// acquire of a connection from the node's pool, connect of DB or of a
	// Listener; nil when the last check succeeded. LastErrorAt is when it
	// happened.
	LastError   error
	LastErrorAt time.Time
	// AuthError is set while the node refuses the credentials: its last
	// authentication or authorization failure at connect (an *AuthError,
	// which unwraps to the server's *pgconn.PgError: 28P01, 28000, 3D000
	// or 42501). Connects to the node back off meanwhile (from 250ms,
	// doubling with jitter, to 5s between login attempts); AuthRetryAt is
	// when the next may log in. Both clear as soon as a connect succeeds.
	AuthError   error
	AuthRetryAt time.Time
}
