package hasql

import (
	"context"
	"errors"
	"strings"
)

var (
	// ErrNoMaster: no node qualified as master before the context ended.
	ErrNoMaster = errors.New("hasql: no master")
	// ErrNoReplica: no replica qualified before the context ended.
	ErrNoReplica = errors.New("hasql: no replica")
	// ErrClosed: the Manager was closed.
	ErrClosed = errors.New("hasql: manager closed")
	// ErrSplitBrain: more than one node is writable and their timelines do
	// not tell which is the master. Writes are refused until it resolves.
	ErrSplitBrain = errors.New("hasql: split brain")
	// ErrStaleMaster: the only writable nodes are on an older timeline than
	// one the Manager has seen; writes are refused (see StaleMasterError).
	ErrStaleMaster = errors.New("hasql: stale master")
)

// NoNodeError is returned by acquires that found no qualifying node before
// their context ended. It unwraps to ErrNoMaster or ErrNoReplica, to the
// context's error, and to each node's last error.
type NoNodeError struct {
	// Target is ErrNoMaster or ErrNoReplica.
	Target error
	// Cause is why the wait ended: the context's error.
	Cause error
	// Nodes is the state of every node when the wait ended.
	Nodes []NodeStatus
	// Why says, for each of Nodes, why it was not used: down (and why),
	// suspect, detached, a stale master, over the lag limit (by how much),
	// behind MinLSN, its sync state unknown, ...
	Why []string
	// Stale is set when the only writable nodes were stale masters: writes
	// were refused, not merely unrouted. NoNodeError unwraps to it.
	Stale *StaleMasterError
	// Last is the last error the acquire met on a node's pool while it
	// waited (a connection the server refused, say), nil when none; the
	// node may have passed its checks since. NoNodeError unwraps to it.
	Last error
}

func (e *NoNodeError) Error() string {
	var b strings.Builder
	b.WriteString(e.Target.Error())
	if e.Cause != nil {
		b.WriteString(" (")
		b.WriteString(e.Cause.Error())
		b.WriteString(")")
	}
	if e.Stale != nil {
		b.WriteString(": ")
		b.WriteString(e.Stale.Error())
	}
	if e.Last != nil {
		b.WriteString(" (last acquire error: ")
		b.WriteString(e.Last.Error())
		b.WriteString(")")
	}
	for i, n := range e.Nodes {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(n.Addr)
		if n.Name != "" {
			b.WriteString(" (" + n.Name + ")")
		}
		b.WriteString(" ")
		if i < len(e.Why) && e.Why[i] != "" {
			b.WriteString(e.Why[i])
		} else {
			b.WriteString(describe(n))
		}
	}
	return b.String()
}

// describe says in a few words what a node is. A node that is up keeps
// the error an application met on it (a failed acquire or connect) in
// LastError without being down.
func describe(n NodeStatus) string {
	if n.LastError != nil && n.Role == RoleUnknown && !n.Up {
		return "down: " + n.LastError.Error()
	}
	if r := roleReason(n); r != "" {
		return r
	}
	switch {
	case n.LastCheck.IsZero():
		return "not checked yet"
	case n.Suspect:
		return n.Role.String() + ", suspect: " + errString(n.LastError)
	default:
		return n.Role.String()
	}
}

// roleReason says why a node that answers its checks serves no acquire at
// all, for the states that have a reason of their own (a stale master, a
// split brain, a detached node, a writable node not master yet), or ""; the
// per-node text of NoNodeError (whyNot) and of WaitReady's error (describe)
// share it.
func roleReason(n NodeStatus) string {
	switch {
	case n.Role == RoleStaleMaster && n.StaleBehind != "" && (n.StaleBehind == n.Addr || n.StaleBehind == n.SameAs):
		return "stale master: writable on timeline " + uitoa(n.Timeline) + ", behind the replica that answered at " + n.StaleBehind + " before this server did, which held WAL of it this server never wrote"
	case n.Role == RoleStaleMaster && n.StaleBehind != "":
		return "stale master: writable on timeline " + uitoa(n.Timeline) + ", behind replica " + n.StaleBehind + ", which holds WAL of it this node never wrote"
	case n.Role == RoleStaleMaster:
		return "stale master: writable on timeline " + uitoa(n.Timeline) + ", older than the cluster's newest"
	case n.SplitBrain && n.Role != RoleMaster:
		return "writable, not used (split brain)"
	case n.Role == RoleDetached:
		return "detached: " + n.Detached
	case n.Role == RoleUnknown && n.Waiting != "":
		return "writable, not master yet: " + n.Waiting
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// Unwrap returns the target (ErrNoMaster or ErrNoReplica), the cause and
// each node's last error except those that are a context's: a check that
// timed out must not make errors.Is(err, context.DeadlineExceeded) true when
// it was the caller who cancelled.
func (e *NoNodeError) Unwrap() []error {
	errs := []error{e.Target}
	if e.Cause != nil {
		errs = append(errs, e.Cause)
	}
	if e.Stale != nil {
		errs = append(errs, e.Stale)
	}
	if e.Last != nil {
		errs = append(errs, e.Last)
	}
	for _, n := range e.Nodes {
		if n.LastError != nil && !errors.Is(n.LastError, context.DeadlineExceeded) && !errors.Is(n.LastError, context.Canceled) {
			errs = append(errs, n.LastError)
		}
	}
	return errs
}

// SplitBrainError names the nodes that are writable together on the same,
// highest timeline. It unwraps to ErrSplitBrain.
type SplitBrainError struct {
	Addrs    []string
	Timeline uint32
}

func (e *SplitBrainError) Error() string {
	return "hasql: split brain: " + strings.Join(e.Addrs, " and ") +
		" are all writable on timeline " + uitoa(e.Timeline) + "; refusing writes until only one is"
}

func (e *SplitBrainError) Unwrap() error { return ErrSplitBrain }

// StaleMasterError says why writes are refused while the only writable
// nodes are on a timeline older than the newest the Manager has seen in the
// cluster: what was written on the newer timeline is not on them. An
// acquire of the master waits for a master meanwhile, and its *NoNodeError,
// when the context ends, unwraps to this error. It unwraps to
// ErrStaleMaster and ErrNoMaster. See Manager.ForgetTimeline for the way
// out.
type StaleMasterError struct {
	// Nodes are the stale masters, "host:port (timeline N)", or
	// "host:port (timeline N, behind replica host:port)".
	Nodes []string
	// Timeline is the newest timeline seen.
	Timeline uint32
	// Behind is, for each of Nodes, the address of the replica of the
	// cluster that holds WAL of the node's own timeline the node never
	// wrote (another branch of that timeline: a second promotion to the
	// same timeline number; or WAL a newer timeline's master sent before
	// it died): "" for a node on an older timeline than Timeline. Such a
	// node stays stale until that replica streams from it, listed by its
	// walsenders (which takes a check user with pg_monitor to see), leaves
	// the set or restarts, or until ForgetTimeline.
	Behind []string
	// BehindMoved is, for each of Behind, whether that replica answered at
	// an address a name has moved from onto the node since (the address
	// reaches the stale node itself now): there is no replica to promote
	// there; it may answer elsewhere. Nil or false: it answers at Behind.
	BehindMoved []bool
}

func (e *StaleMasterError) Error() string {
	var behind []string
	older := len(e.Behind) < len(e.Nodes)
	for _, b := range e.Behind {
		if b == "" {
			older = true
		} else {
			behind = append(behind, b)
		}
	}
	nodes, tl := strings.Join(e.Nodes, " and "), uitoa(e.Timeline)
	switch {
	case len(behind) == 0:
		it := "it to rejoin as a replica"
		if len(e.Nodes) > 1 {
			it = "them to rejoin as replicas"
		}
		return "hasql: stale master: " + nodes + " writable on an older timeline than the cluster's " + tl +
			"; refusing writes (rewind " + it + ", promote a replica on timeline " + tl +
			", or call ForgetTimeline to give up what was written there)"
	case len(e.Nodes) == 1 && !older && len(e.BehindMoved) == 1 && e.BehindMoved[0]:
		// The replica that proved it answered at an address a name has
		// moved from it onto this server since: there is nothing to
		// promote there now.
		r := behind[0]
		return "hasql: stale master: " + nodes + " writable, but the replica that answered at " + r +
			" before a name moved onto this server held WAL of its timeline it never wrote (another branch of it, or a newer timeline's); refusing writes (rewind it to rejoin as a replica, promote that replica wherever it answers now, or call ForgetTimeline to give up what it held)"
	case len(e.Nodes) == 1 && !older:
		r := behind[0]
		return "hasql: stale master: " + nodes + " writable, but replica " + r +
			" holds WAL of its timeline it never wrote (another branch of it, or a newer timeline's); refusing writes (rewind it to rejoin as a replica, promote " +
			r + ", or call ForgetTimeline to give up what " + r + " holds; if " + r +
			" streams from it, a check user with pg_monitor lets pgxha see that)"
	}
	// Several nodes, each with its own reason: one advice for them all,
	// which never tells to promote more than one replica.
	return "hasql: stale master: " + nodes + " writable, each on an older timeline than the cluster's " + tl +
		" or behind the replica named, which holds WAL of the node's timeline it never wrote; refusing writes (rewind each to rejoin as a replica, promote one replica, the one furthest ahead on timeline " +
		tl + ", or call ForgetTimeline to give up what the others hold; if a replica named streams from its node, a check user with pg_monitor lets pgxha see that)"
}

// Unwrap returns ErrStaleMaster and ErrNoMaster: no node qualifies as
// master (failover.RunInTx waits for one, as for no master at all).
func (e *StaleMasterError) Unwrap() []error { return []error{ErrStaleMaster, ErrNoMaster} }

func uitoa(v uint32) string {
	if v == 0 {
		return "0"
	}
	var buf [10]byte
	i := len(buf)
	for v > 0 {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	return string(buf[i:])
}
