package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/pgxha/pgxha/internal/safetext"
)

// Discoverer finds the nodes of a cluster and follows them as they change.
//
// The hasql Manager owns a Discoverer: it calls Run once, on a goroutine of
// its own, with a context that ends when the Manager closes. Run reports
// what it finds through update and returns only when ctx ends; it starts no
// goroutine that outlives it. The Discoverers of this package are safe for
// concurrent use, but each must be Run by one caller at a time.
type Discoverer interface {
	// Run looks for the nodes at once, calls update with the first State,
	// then calls it again each time the State changes: the set of nodes
	// (any field of any node) or the error of the last look. It calls
	// update from Run's goroutine, one call at a time, and waits for it to
	// return. Run returns nil when ctx ends, or an error, at once, if it
	// cannot run at all; the built-in Discoverers always run.
	Run(ctx context.Context, update func(State)) error
}

// Refresher is implemented by Discoverers that can look again before their
// next scheduled look. The Manager calls Refresh when a node fails, since
// a failed node may be one that left the set. Refresh never blocks; requests
// made while a look is pending or in progress collapse into one, and looks
// on request are at least a minimum interval apart (MinInterval in the
// built-ins' configs), so that a burst of failures costs one look.
type Refresher interface {
	Refresh()
}

// State is what a Discoverer found.
type State struct {
	// Nodes is the node set, in the source's order, never modified once
	// reported. When Err is set it is the last good set (nil if there was
	// none yet): a Discoverer that fails keeps its last good set.
	Nodes []Node

	// Err is why the last look failed, nil when it succeeded. A look that
	// finds no node fails with an error that wraps ErrNoNodes: a source
	// never empties the set, since an empty answer is more likely a broken
	// source than a cluster without nodes.
	Err error
}

// ErrNoNodes is wrapped by the error of a look that found no node.
var ErrNoNodes = errors.New("no node found")

// Node is one node of a set.
type Node struct {
	// Addr is the node's "host:port", its identity within a set: two nodes
	// of a set never have the same Addr. A host is an IP address or a name.
	Addr string

	// Name is the node's name when the source gives one (Patroni's member
	// name, an SRV record's target), or "".
	Name string

	// Tags are the node's tags, or nil. Patroni's tags are passed on as they
	// are (booleans as "true", numbers in decimal); SRV records give
	// srv_priority and srv_weight.
	Tags map[string]string

	// Role, State and Lag are what the source reports of the node, for
	// sources that know (Patroni); empty otherwise. They are for display
	// and for tag-like decisions: the Manager checks every node itself and
	// routes by its own checks.
	//
	// Role is Patroni's role: "leader", "standby_leader", "sync_standby",
	// "replica" (and in newer Patroni "quorum_standby"). State is its
	// state: "running", "streaming", "stopped", "starting", ...
	Role  string
	State string
	Lag   Lag
}

// Lag is a replication lag as a source reports it.
type Lag struct {
	// Bytes is the lag in bytes of WAL behind the leader; meaningful only
	// when Known is set. Patroni reports none for its leader, and
	// "unknown" for a member whose position it does not know.
	Bytes int64
	Known bool
}

// Tag names with a meaning across pgxha.
const (
	// TagNoLoadBalance: with a true value (see [Node.Tag]), the node takes
	// no reads; it remains a failover candidate. Patroni's tag of the same
	// name.
	TagNoLoadBalance = "noloadbalance"
	// TagNoFailover: with a true value, the node is never promoted by
	// Patroni. Patroni's tag of the same name; reported only.
	TagNoFailover = "nofailover"
	// TagZone names the node's zone (availability zone, data centre), for
	// reads that prefer the caller's zone.
	TagZone = "zone"
)

// Tag reports whether the node has a true boolean tag name ("true", "1",
// "t", "yes", "on", any case, as Patroni and PostgreSQL accept).
func (n *Node) Tag(name string) bool { return IsTrue(n.Tags[name]) }

// IsTrue reports whether a tag's value is a true boolean: "true", "1",
// "t", "yes", "on", any case, as Patroni and PostgreSQL accept.
func IsTrue(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "t", "1", "yes", "y", "on":
		return true
	}
	return false
}

// Equal reports whether n and o are the same in every field.
func (n *Node) Equal(o *Node) bool {
	return n.Addr == o.Addr && n.Name == o.Name && n.Role == o.Role && n.State == o.State &&
		n.Lag == o.Lag && maps.Equal(n.Tags, o.Tags)
}

// Equal reports whether two node sets are the same, node by node, in the
// same order.
func Equal(a, b []Node) bool {
	return slices.EqualFunc(a, b, func(x, y Node) bool { return x.Equal(&y) })
}

// Changes is how one node set differs from another, by Addr.
type Changes struct {
	Added   []Node // in the new set only, in its order
	Removed []Node // in the old set only, in its order
	Changed []Node // in both with another field different: the new value, in the new set's order
}

// Empty reports whether there is no change at all.
func (c Changes) Empty() bool {
	return len(c.Added) == 0 && len(c.Removed) == 0 && len(c.Changed) == 0
}

// Diff returns what changed from the set old to the set new, matching nodes
// by Addr. A change of order alone is no change.
func Diff(old, new []Node) Changes {
	byAddr := make(map[string]*Node, len(old))
	for i := range old {
		byAddr[old[i].Addr] = &old[i]
	}
	var c Changes
	seen := make(map[string]bool, len(new))
	for i := range new {
		n := &new[i]
		seen[n.Addr] = true
		switch o, ok := byAddr[n.Addr]; {
		case !ok:
			c.Added = append(c.Added, *n)
		case !o.Equal(n):
			c.Changed = append(c.Changed, *n)
		}
	}
	for _, o := range old {
		if !seen[o.Addr] {
			c.Removed = append(c.Removed, o)
		}
	}
	return c
}

// clone returns a deep copy of nodes, so that a reported set shares nothing
// with the caller's or the next one.
func clone(nodes []Node) []Node {
	if nodes == nil {
		return nil
	}
	out := make([]Node, len(nodes))
	for i, n := range nodes {
		out[i] = n
		out[i].Tags = maps.Clone(n.Tags)
	}
	return out
}

// checkAddr validates a "host:port" address.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: want host:port", clip(addr))
	}
	if host == "" {
		return fmt.Errorf("address %q: no host", clip(addr))
	}
	if _, err := parsePort(port); err != nil {
		return fmt.Errorf("address %q: %w", clip(addr), err)
	}
	return nil
}

// parsePort reads a TCP port number, 1 to 65535.
func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("port %q: want a number from 1 to 65535", clip(s))
	}
	return uint16(p), nil
}

// maxShown bounds what an error quotes of a text a server or an API gave.
const maxShown = 128

// clip returns s as an error may quote it: at most maxShown bytes (cut at
// a character's start), followed by how long it was.
func clip(s string) string { return safetext.Clip(s, maxShown) }

// printable returns s clipped, as it is when it is printable ASCII, else
// quoted with its other bytes escaped.
func printable(s string) string {
	s = clip(s)
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return strconv.Quote(s)
		}
	}
	return s
}

// checkSet validates a node set: addresses, no duplicates.
func checkSet(nodes []Node) error {
	seen := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		if err := checkAddr(n.Addr); err != nil {
			return err
		}
		if seen[n.Addr] {
			return fmt.Errorf("address %q: listed twice", clip(n.Addr))
		}
		seen[n.Addr] = true
	}
	return nil
}

// checkName validates a DNS name: labels of letters, digits, '-' and '_',
// 1 to 63 characters each, 253 in all, with an optional final dot.
func checkName(name string) error {
	s := strings.TrimSuffix(name, ".")
	if s == "" || len(s) > 253 {
		return fmt.Errorf("name %q: want a DNS name such as db.example.com", name)
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("name %q: want a DNS name such as db.example.com", name)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("name %q: want a DNS name such as db.example.com", name)
			}
		}
	}
	return nil
}
