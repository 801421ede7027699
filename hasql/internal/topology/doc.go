// Package topology is the decision core of the hasql Manager: a pure state
// machine from events (the node set, the result or failure of a check, a
// promotion seen, an error the application met, ForgetTimeline) to the view
// (which node is master, which replicas follow it and how, which are
// stale, detached, foreign or unknown, their lag) and to actions (cut a
// node's connections, reset its pool, check the others now, log).
//
// It has no goroutines, reads no clock and does no I/O: every time it
// needs comes in with the event, and the same events give the same
// decisions. The Manager (package hasql) is the shell: it runs the checks,
// feeds their outcome in, applies the actions in the order given (a cut
// before the routing snapshot that names the next master is published) and
// builds routing snapshots from the view. The model is etcd's raft package:
// Step in, Ready out.
//
// The core is tested by deterministic simulation (sim_test.go): a model of
// PostgreSQL streaming replication under faults drives it through seeded
// random histories, and invariants are checked after every step.
package topology
