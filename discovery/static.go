package discovery

import (
	"context"
	"fmt"
	"strings"
)

// Static is a Discoverer of a fixed node set: what a connection string's
// hosts become when no other discovery is configured. It is safe for
// concurrent use.
type Static struct {
	nodes []Node // read-only after NewStatic
}

// NewStatic returns a Static Discoverer of nodes, which it copies. Every
// node needs a valid "host:port" Addr, each a different one; at least one
// node is needed (the error then wraps ErrNoNodes).
func NewStatic(nodes ...Node) (*Static, error) {
	if len(nodes) == 0 {
		return nil, fmt.Errorf("discovery: static: %w", ErrNoNodes)
	}
	if err := checkSet(nodes); err != nil {
		return nil, fmt.Errorf("discovery: static: %w", err)
	}
	return &Static{nodes: clone(nodes)}, nil
}

// Nodes returns a copy of the set.
func (s *Static) Nodes() []Node { return clone(s.nodes) }

// Run reports the set once, then waits for ctx to end.
func (s *Static) Run(ctx context.Context, update func(State)) error {
	update(State{Nodes: clone(s.nodes)})
	<-ctx.Done()
	return nil
}

// String describes the Discoverer, for logs: "static h1:5432,h2:5432".
func (s *Static) String() string {
	addrs := make([]string, len(s.nodes))
	for i, n := range s.nodes {
		addrs[i] = n.Addr
	}
	return "static " + strings.Join(addrs, ",")
}
