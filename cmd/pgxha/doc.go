// Command pgxha shows a replicated PostgreSQL cluster the way pgxha's
// Manager sees it: which node is the master, which replicas are synchronous
// or asynchronous, how far each replica lags, how long checks take and why a
// node is down. It runs the library itself (hasql.New on the connection
// string), so what it shows is what services using the same connection
// string see.
//
// Usage:
//
//	pgxha status [-json] [-wait 2s] [-v] [-dsn-file FILE | DSN]
//	pgxha watch  [-json] [-interval 1s] [-v] [-dsn-file FILE | DSN]
//
// DSN is a multi-host connection string, in URL or keyword/value form, with
// any hasql_* settings (see package hasql):
//
//	PGXHA_DSN='postgres://app:secret@db1:5432,db2:5432,db3:5432/app?hasql_check_timeout=500ms' pgxha status
//	pgxha status -dsn-file /run/secrets/pgxha-dsn
//	pgxha status -dsn-file - < dsn.txt
//	pgxha status 'host=db1,db2,db3 port=5432 user=app dbname=app'
//
// The DSN is read from the PGXHA_DSN environment variable, or from a file
// (-dsn-file FILE) or standard input (-dsn-file -). It may be given as the
// argument too, but any user of the machine can read the arguments of a
// process (/proc/PID/cmdline), password included: pgxha warns when that
// DSN holds a password.
// The password is never printed: errors and logs that would contain it show
// xxxxx in its place. A password that is also a word of the output (the user
// or database name, "pgxha", "postgres") is hidden where it stands as a
// password only, so "user=postgres" and "pgxha: no master" stay as they are.
//
// status checks every node, waits up to -wait (default 2s) for a complete
// view (a master, and every node that answers classified as master or
// replica), and prints one table:
//
//	2026-11-23 07:39:12  1 master, 1 sync, 1 async
//	ADDRESS          NAME  ROLE                   SYNC STATE  TIMELINE  LSN        LAG BYTES  LAG TIME  CHECK  ERROR
//	127.0.0.1:32879  n1    master                 -           1         0/1A82E20  -          -         13ms
//	127.0.0.1:37443  n2    sync                   sync        1         0/1A82E20  0 B        0s        11ms
//	127.0.0.1:36537  n3    async (replay paused)  async       1         0/1550EB0  5.2 MiB    3.18s     13ms
//
// ROLE is master, sync, async, quorum (a candidate of ANY k), replica (sync
// state unknown), detached (a replica that does not follow the master),
// stale (a writable node on an older timeline), or down (the last check
// failed; ERROR says why, and the full errors follow the table), not
// checked, split brain (writable but not used) or unknown; suspect (one
// check timed out), replay paused and split brain qualify it in parentheses. LSN is the current WAL
// position on the master and the replayed one on a replica. LAG BYTES and
// LAG TIME are measured against the master: until a master has been seen
// they show "-" and every replica shows as async (its sync state is not
// known yet); once the master is lost they keep their last values.
// CHECK is how long the last check took, connecting included.
//
// When the view is still incomplete after -wait, status prints what it knows.
// -wait 0 prints right after the first round of checks.
//
// watch shows the table until interrupted (Ctrl-C or SIGTERM). On a
// terminal it redraws it every -interval (default 1s) and at once on every
// change of roles, clearing the terminal with ANSI escape sequences. Piped
// or redirected, it prints a frame only when something a reader acts on
// changed (a role, a node going down or up, a sync state, a timeline, an
// error), frames a blank line apart with no escape codes; positions, lag
// and check times alone make no frame. Its header line has the time and a
// summary of the roles.
//
// With -json, status prints one JSON document and watch prints one per
// line every -interval, each of the form:
//
//	{
//	  "time": "2025-06-01T12:00:00.123456789Z",
//	  "master": "127.0.0.1:32879",
//	  "summary": {"master": 1, "sync": 1, "async": 1, "unknown": 0, "down": 0},
//	  "nodes": [
//	    {
//	      "addr": "127.0.0.1:37443", "name": "n2", "role": "sync", "up": true,
//	      "suspect": false, "writable": false, "split_brain": false,
//	      "sync_state": "sync", "timeline": 1, "lsn": "0/3000148",
//	      "receive_lsn": "0/3000148", "replay_paused": false,
//	      "lag_bytes": 0, "lag_seconds": 0,
//	      "last_check": "2025-06-01T12:00:00.1Z", "check_latency_seconds": 0.00095,
//	      "error": null, "error_at": null
//	    }
//	  ]
//	}
//
// role is "master", "sync", "async", "quorum", "replica", "detached",
// "stale" or "unknown" (as hasql.Role's String); up is false for a node
// whose last check failed or that was not checked yet. LSNs are in
// PostgreSQL's text form, durations are in seconds, errors are strings.
// Fields that do not apply (lag on a master, the LSN of a node that is down)
// are null. master is null when no node is the master.
//
// -v logs the Manager's role changes and node errors to standard error.
//
// Exit status: 0 when the cluster has a master, 2 when no node is the master
// (status only), 1 for usage and other errors.
package main
