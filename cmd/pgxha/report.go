package main

import (
	"github.com/pgxha/pgxha/internal/safetext"
	"strconv"
	"time"

	"github.com/pgxha/pgxha/hasql"
)

// report is one view of the cluster: what status prints once and watch
// prints at every interval. Its JSON form is part of the command's
// interface: field names only get added, never renamed.
type report struct {
	Time time.Time `json:"time"`
	// Master is the address of the master, nil when no node is master.
	Master *string `json:"master"`
	// SystemIdentifier is the master's cluster's system identifier, the
	// value to pin with hasql_system_identifier; nil with no master.
	SystemIdentifier *string      `json:"system_identifier"`
	Summary          summary      `json:"summary"`
	Nodes            []nodeReport `json:"nodes"`
}

// summary counts nodes by role; a node that is down counts as down, not
// unknown, so that the counts add up to the number of nodes.
type summary struct {
	Master  int `json:"master"`
	Sync    int `json:"sync"`
	Async   int `json:"async"`
	Unknown int `json:"unknown"`
	Down    int `json:"down"`
	// Quorum, Replica (sync state unknown), Detached and Stale count the
	// roles beside the three above.
	Quorum   int `json:"quorum"`
	Replica  int `json:"replica"`
	Detached int `json:"detached"`
	Stale    int `json:"stale"`
}

// nodeReport is one node. Pointers are nil (JSON null) where a value does
// not apply or is not known.
type nodeReport struct {
	Addr                string     `json:"addr"`
	Name                *string    `json:"name"`
	Role                string     `json:"role"`
	Up                  bool       `json:"up"`
	Suspect             bool       `json:"suspect"`
	Writable            bool       `json:"writable"`
	SplitBrain          bool       `json:"split_brain"`
	SyncState           *string    `json:"sync_state"`
	Timeline            *uint32    `json:"timeline"`
	LSN                 *hasql.LSN `json:"lsn"`
	ReceiveLSN          *hasql.LSN `json:"receive_lsn"`
	ReplayPaused        bool       `json:"replay_paused"`
	LagBytes            *int64     `json:"lag_bytes"`
	LagSeconds          *float64   `json:"lag_seconds"`
	LastCheck           *time.Time `json:"last_check"`
	CheckLatencySeconds *float64   `json:"check_latency_seconds"`
	Error               *string    `json:"error"`
	ErrorAt             *time.Time `json:"error_at"`
	// Detached says why a replica does not follow the master; SyncUnknown
	// why its sync state is unknown; StaleMaster marks a writable node on an
	// older timeline or behind a replica, StaleBehind names that replica;
	// SameAs the address of the node it is the same server as; Waiting
	// which check a writable node waits for before it may be master.
	Detached    *string `json:"detached"`
	SyncUnknown *string `json:"sync_unknown"`
	Waiting     *string `json:"waiting"`
	StaleMaster bool    `json:"stale_master"`
	StaleBehind *string `json:"stale_behind"`
	SameAs      *string `json:"same_as"`
	LagKnown    bool    `json:"lag_known"`

	// What the table shows beyond the fields above.
	down         bool
	checked      bool
	lagUnknown   bool // a replica whose time lag cannot be measured yet
	lag          time.Duration
	checkLatency time.Duration
}

// makeReport builds a report from the Manager's view of every node, with
// every error redacted by r.
func makeReport(now time.Time, nodes []hasql.NodeStatus, r redactor) report {
	rep := report{Time: now, Nodes: make([]nodeReport, 0, len(nodes))}
	for _, n := range nodes {
		nr := makeNodeReport(n, r)
		switch {
		case n.Role == hasql.RoleMaster:
			rep.Summary.Master++
			rep.Master = &nr.Addr
			if n.SystemID != 0 {
				id := strconv.FormatUint(n.SystemID, 10)
				rep.SystemIdentifier = &id
			}
		case n.Role == hasql.RoleSyncReplica:
			rep.Summary.Sync++
		case n.Role == hasql.RoleAsyncReplica:
			rep.Summary.Async++
		case n.Role == hasql.RoleQuorumReplica:
			rep.Summary.Quorum++
		case n.Role == hasql.RoleReplica:
			rep.Summary.Replica++
		case n.Role == hasql.RoleDetached:
			rep.Summary.Detached++
		case n.Role == hasql.RoleStaleMaster:
			rep.Summary.Stale++
		case nr.down:
			rep.Summary.Down++
		default:
			rep.Summary.Unknown++
		}
		rep.Nodes = append(rep.Nodes, nr)
	}
	return rep
}

func makeNodeReport(n hasql.NodeStatus, r redactor) nodeReport {
	checked := !n.LastCheck.IsZero()
	// Every text a server or a discovery source controls (the name is a
	// server's cluster_name or a Patroni member's name, errors quote what
	// the server sent) is printed with control characters escaped: no
	// terminal escape reaches the screen.
	p := safetext.Printable
	nr := nodeReport{
		Addr:         p(n.Addr),
		Name:         nonEmpty(p(n.Name)),
		Role:         n.Role.String(),
		Suspect:      n.Suspect,
		Writable:     n.Writable,
		SplitBrain:   n.SplitBrain,
		SyncState:    nonEmpty(p(n.SyncState)),
		ReplayPaused: n.ReplayPaused,
		down:         isDown(n),
		checked:      checked,
		Detached:     nonEmpty(p(n.Detached)),
		SyncUnknown:  nonEmpty(p(n.SyncUnknown)),
		Waiting:      nonEmpty(p(n.Waiting)),
		StaleMaster:  n.StaleMaster,
		StaleBehind:  nonEmpty(p(n.StaleBehind)),
		SameAs:       nonEmpty(p(n.SameAs)),
		LagKnown:     n.LagKnown,
	}
	nr.Up = checked && !nr.down
	if n.Timeline != 0 {
		nr.Timeline = &n.Timeline
	}
	if n.LSN != 0 {
		nr.LSN = &n.LSN
	}
	if n.ReceiveLSN != 0 {
		nr.ReceiveLSN = &n.ReceiveLSN
	}
	if n.Role.IsReplica() && !n.LagAt.IsZero() {
		nr.LagBytes = &n.LagBytes // known once a master is
		nr.lagUnknown = !n.LagKnown
	}
	if n.LagKnown {
		nr.LagSeconds = seconds(n.Lag)
		nr.lag = n.Lag
	}
	if checked {
		nr.LastCheck = &n.LastCheck
		nr.CheckLatencySeconds = seconds(n.CheckLatency)
		nr.checkLatency = n.CheckLatency
	}
	if n.LastError != nil {
		msg := safetext.PrintableLines(r.String(n.LastError.Error()))
		nr.Error = &msg
		if !n.LastErrorAt.IsZero() {
			nr.ErrorAt = &n.LastErrorAt
		}
	}
	return nr
}

// isDown reports a node that has been checked and is not up.
func isDown(n hasql.NodeStatus) bool {
	return !n.LastCheck.IsZero() && !n.Up
}

// complete reports whether nodes make a complete view: a master, and every
// node that is not down is a master or a replica. It also returns how many
// replicas such a view has, for Manager.WaitReady.
func complete(nodes []hasql.NodeStatus) (ok bool, replicas int) {
	masters, have := 0, 0
	want := len(nodes) - 1
	for _, n := range nodes {
		switch {
		case n.Role == hasql.RoleMaster:
			masters++
		case n.Role.IsReplica():
			have++
		case isDown(n), n.Role == hasql.RoleDetached, n.Role == hasql.RoleStaleMaster:
			want-- // decided: not one the view waits for
		}
	}
	want = max(want, 0)
	return masters == 1 && have >= want, want
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func seconds(d time.Duration) *float64 {
	s := d.Seconds()
	return &s
}
