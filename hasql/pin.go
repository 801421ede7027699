package hasql

import (
	"context"
	"fmt"
	"net"
	"slices"
)

// A node is one server: the one its checks reach. When the node's host is
// a name, the name is resolved by the check connection and by every
// connection of the pool, DB() and Listen, each on its own, and a name
// that moved (a DNS record, a failover script) would let them reach
// different servers: the checks see the new master while a connection
// opened after the name went back reaches the old one, which takes the
// writes routed to the node's role. So the pool's connections go where the
// check connection that made the node's view went: pinLookup keeps, of
// what the name resolves to, only the address the check connection dialled
// (the pin, set with each check's result before the view is published).
// When the name no longer resolves to it, no connection is opened and the
// check connection connects afresh; its next check shows which server the
// name reaches now, the view follows, the pin moves, and the connections
// opened to the other address are closed (see repin). Cancel requests go
// to the address of the connection they cancel, as pgconn sends them.

// pinLookup wraps the pool's LookupFunc (nil: pgconn's default, the
// system's resolver) with the pin.
func (n *node) pinLookup(lookup func(context.Context, string) ([]string, error)) func(context.Context, string) ([]string, error) {
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	return func(ctx context.Context, host string) ([]string, error) {
		addrs, err := lookup(ctx, host)
		if err != nil {
			return nil, err
		}
		p := n.pinned.Load()
		if p == nil || *p == "" {
			return addrs, nil // not checked yet, or a socket
		}
		kept := slices.DeleteFunc(slices.Clone(addrs), func(a string) bool { return lookupHost(a) != *p })
		if len(kept) == 0 {
			n.redial.Store(true)
			n.trigger()
			return nil, fmt.Errorf("hasql: %s resolves to %v now, not to %s where the node's checks run: a check connects there first", host, addrs, *p)
		}
		return kept, nil
	}
}

// repin sets the pin to host, the host part of the address of the check
// connection whose result is being reported, and closes the pool's
// connections opened to another address. Caller must hold m.mu, and call
// it before the result changes the view.
func (n *node) repin(host string) {
	if p := n.pinned.Load(); p != nil && *p == host {
		return
	}
	n.pinned.Store(&host)
	if host == "" {
		return
	}
	if k := n.conns.closeUnless(host); k > 0 {
		n.pool.Reset()
		n.m.log.Warn("pgxha: the node's name reaches another address now: the connections opened to the previous one are closed",
			"addr", n.cfg.Addr, "address", host, "closed", k)
	}
}

// dialHost returns the host part of a dialled address, "" for one that
// has none (a Unix socket's path).
func dialHost(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return h
}

// lookupHost returns the host part of what a LookupFunc returned: an
// address, optionally with a port.
func lookupHost(a string) string {
	if h, _, err := net.SplitHostPort(a); err == nil {
		return h
	}
	return a
}
