// Package hasql makes a replicated PostgreSQL cluster look like one
// dependable database: give it one multi-host connection string and it finds
// the master, tells synchronous replicas from asynchronous ones, measures
// their lag, keeps a pgx pool per node and hands out connections to the right
// node through a pluggable balancer, re-routing when the master dies or a
// replica is promoted.
//
//	m, err := hasql.New(ctx, "postgres://app:secret@db1,db2,db3/app?hasql_max_lag=5s")
//	if err != nil { ... }
//	defer m.Close()
//
//	// Writes go to the master, reads to a replica, per call:
//	_, err = m.Master().Exec(ctx, "INSERT INTO events (kind) VALUES ($1)", "signup")
//	err = m.Replica().QueryRow(ctx, "SELECT count(*) FROM events").Scan(&n)
//
//	// Or take a connection and give it back:
//	conn, err := m.AcquireReplica(ctx, hasql.SyncOnly())
//	defer conn.Release()
//
// # How roles are found
//
// Every node has a check connection of its own, outside its pool, so a
// saturated pool cannot make a healthy node look dead. A check is one round
// trip (see package checker) within CheckTimeout; between checks the
// connection waits on its socket, so a server that closes it (shutdown,
// crash) is seen at once. The master is the writable node (not in recovery,
// not read-only); with more than one, the one on the highest timeline, and
// when timelines tie writes are refused (a split brain) until it resolves. A
// replica is found in the master's pg_stat_replication by the name its
// walreceiver uses (application_name in primary_conninfo, else cluster_name),
// then by address: it is synchronous (RoleSyncReplica) when its sync_state is
// sync, a quorum candidate (RoleQuorumReplica, which SyncOnly does not take)
// when it is quorum, asynchronous otherwise, and RoleReplica when its sync
// state cannot be known. A replica that does not follow the current master is
// detached and serves no reads.
// Lag is measured against the master: bytes of WAL not replayed, and how old
// the newest data not replayed is (the master's replay_lag, or the time since
// the master passed the replica's replay position, when larger).
//
// A refused connection or a server-side termination marks a node down at
// once; a timed-out check makes it suspect and the next one, run at once,
// confirms. In steady state no statement runs between checks. While there is
// no master, or the master is suspect or its check is slow, every node is
// checked every FastCheckInterval and, with WatchPromotion, each replica is
// probed for a promotion every PromotionPoll between those checks. Errors the application meets on
// pooled connections (connection lost, 25006, 57P01, 57P02, 57P03) have the
// node checked at once; a connection that met 25006 is closed when released.
//
// # Acquiring
//
// The routing view is an immutable snapshot swapped atomically by the check
// goroutines; acquires read it without a lock, pick a node with the
// balancer's Picker and acquire from its pool. With no candidate they wait
// for the next snapshot (no polling) until their context ends.
package hasql
