package hasql

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql/internal/topology"
)

// The node set. The connection string's hosts are the first set; a
// discoverer (see WithDiscoverer) may replace it while the Manager runs. A
// node that joins gets its pool and its check goroutine at once and joins
// routing once checked (until then its role is unknown, so no candidate set
// has it). A node that leaves is out of the set, so of every snapshot built
// from then on, at once; its check goroutine stops, and its pool closes once
// the connections acquired from it are released. An acquire that picked it
// from an older snapshot finds its pool closed, or fails its re-validation,
// and picks again.

// nodesNow returns the node set for a reader without m.mu.
func (m *Manager) nodesNow() []*node {
	if p := m.list.Load(); p != nil {
		return *p
	}
	return nil
}

// setNodesLocked makes nodes the node set, in the decision core too; the
// caller applies what it decided (applyLocked). Caller must hold m.mu.
func (m *Manager) setNodesLocked(nodes []*node) {
	m.nodes = nodes
	m.list.Store(&nodes)
	m.byID = make(map[topology.ID]*node, len(nodes))
	members := make([]topology.Member, len(nodes))
	for i, n := range nodes {
		m.byID[n.id()] = n
		members[i] = n.member()
	}
	m.core.SetMembers(time.Now(), members)
	for _, n := range nodes {
		n.cv = m.core.Node(n.id())
	}
}

// makeNode makes a node of nc with the next index.
func (m *Manager) makeNode(ctx context.Context, nc NodeConfig) (*node, error) {
	m.mu.Lock()
	i := m.nextIndex
	m.nextIndex++
	m.mu.Unlock()
	return newNode(ctx, m, i, nc)
}

// firstDiscovered makes the nodes of the discoverer's first set: each
// address once, with its tags; a member that cannot be a node (a bad
// address, refused by ConfigureNode) is logged and left out, as reconcile
// leaves it out of a later set.
func (m *Manager) firstDiscovered(ctx context.Context, members []member) []*node {
	var nodes []*node
	seen := make(map[string]bool, len(members))
	for _, mb := range members {
		if seen[mb.addr] {
			continue
		}
		seen[mb.addr] = true
		nc, err := m.nodeConfigFor(mb)
		if err == nil {
			var n *node
			if n, err = m.makeNode(ctx, nc); err == nil {
				n.setTags(mb.tags)
				nodes = append(nodes, n)
				continue
			}
		}
		m.log.Warn("pgxha: discovered node left out", "addr", mb.addr, "err", err)
	}
	return nodes
}

// member is a node a discoverer reports.
type member struct {
	addr string
	name string            // its application_name, when the source knows it
	tags map[string]string // nil: none
	// trusted: its source is the user's own naming (DNS, SRV, the
	// connection string), not what a server or an API says.
	trusted bool
}

// nodeConfigFor makes the configuration of a discovered node: its address,
// the weight and name the user gave that address (WithNodeWeight,
// WithReplicaName; the name the discoverer reports when the user gave
// none), and the TLS settings the connection string gave its first host,
// for this host (see discoveredTLS for the name its certificate is verified
// against).
func (m *Manager) nodeConfigFor(mb member) (NodeConfig, error) {
	host, portStr, err := net.SplitHostPort(mb.addr)
	if err != nil {
		return NodeConfig{}, fmt.Errorf("hasql: discovered node %q: %w", mb.addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return NodeConfig{}, fmt.Errorf("hasql: discovered node %q: invalid port %q", mb.addr, portStr)
	}
	if err := m.cfg.checkDiscoveredHost(host); err != nil {
		return NodeConfig{}, err
	}
	nc := NodeConfig{Addr: mb.addr, Host: host, Port: uint16(port), Name: mb.name, Weight: 1, trusted: mb.trusted, discovered: true}
	if i := slices.IndexFunc(m.cfg.Nodes, func(c NodeConfig) bool { return c.Addr == mb.addr }); i >= 0 {
		nc.trusted = true // the connection string names it
		nc.Weight = m.cfg.Nodes[i].Weight
		nc.Name = cmp.Or(m.cfg.Nodes[i].Name, nc.Name)
	} else if s, ok := m.cfg.later[mb.addr]; ok {
		if s.weight > 0 {
			nc.Weight = s.weight
		}
		nc.Name = cmp.Or(s.name, nc.Name)
	}
	nc.tls = m.cfg.discoveredTLS(host, uint16(port))
	return nc, nil
}

// describes reports whether n is still the node for mb: a node of the
// connection string stays (its pool is the application's, the master's
// connections among them), the name the user gave it too, and takes the
// one mb gives when the user gave none (see nameLocked); a discovered one,
// as long as the name and the trust mb gives the address are its own.
func (m *Manager) describes(n *node, mb member) bool {
	if !n.cfg.discovered {
		return true
	}
	nc, err := m.nodeConfigFor(mb)
	return err != nil || nc.Name == n.cfg.Name && nc.trusted == n.cfg.trusted
}

// reconcile makes the node set match members: nodes are added for new
// addresses and removed for addresses gone, the others keep their pools,
// checks and history (their tags follow). The set keeps members' order.
// A member that cannot be made a node is reported and left out; when none
// of them can, the set stays as it is and the error says why. It returns
// how many nodes the set has.
func (m *Manager) reconcile(members []member) (int, error) {
	old := m.nodesNow()
	byAddr := make(map[string]*node, len(old))
	for _, n := range old {
		byAddr[n.cfg.Addr] = n
	}
	next := make([]*node, 0, len(members))
	var added []*node
	// discard closes the nodes made for a set that is not taken.
	discard := func() {
		for _, n := range added {
			n.cancel()
			n.closePool()
		}
	}
	var leftOut []string
	seen := make(map[string]bool, len(members))
	for _, mb := range members {
		if seen[mb.addr] {
			continue
		}
		seen[mb.addr] = true
		if n := byAddr[mb.addr]; n != nil && m.describes(n, mb) {
			next = append(next, n)
			continue
		}
		// A new address, or one the source now describes otherwise (under
		// another name: the servers behind two addresses swapped, a source
		// that was behind caught up): a node of its own, the old one
		// leaves. A discovered node keeps the name it was made with, and
		// the name is what its master's walsender rows are matched by:
		// kept, it would take the sync state of the server that went by
		// it. (A node of the connection string is renamed in place
		// instead, its pool kept: the decision core, told, claims no sync
		// and takes no replay position from a row read before the rename;
		// see nameLocked.)
		if m.ctx.Err() != nil {
			discard() // Close has begun
			return len(old), ErrClosed
		}
		nc, err := m.nodeConfigFor(mb)
		if err == nil {
			var n *node
			if n, err = m.makeNode(m.ctx, nc); err == nil {
				n.setTags(mb.tags)
				next = append(next, n)
				added = append(added, n)
				continue
			}
		}
		m.log.Warn("pgxha: discovered node left out", "addr", mb.addr, "err", err)
		leftOut = append(leftOut, err.Error())
	}
	if len(next) == 0 {
		// Nothing to route to: keep the last good set.
		return len(old), fmt.Errorf("hasql: discovery: no node of the set can be used (%s)", strings.Join(leftOut, "; "))
	}
	// Tags change under m.mu with the view they route: Nodes never shows
	// a tag the snapshot does not route by yet.
	setTags := func() (changed bool) {
		tagged := make(map[string]bool, len(members))
		for _, mb := range members {
			if n := byAddr[mb.addr]; n != nil && !tagged[mb.addr] { // an address's first member, as above
				tagged[mb.addr] = true
				changed = n.setTags(mb.tags) || changed
			}
		}
		return changed
	}
	// Removed: every old node not in next (by node, not address, so that
	// no node is left running outside the set).
	var removed []*node
	for _, n := range old {
		if !slices.Contains(next, n) {
			removed = append(removed, n)
		}
	}
	if len(added) == 0 && len(removed) == 0 && slices.Equal(next, old) {
		m.restate(next, members, setTags)
		return len(next), nil
	}

	m.mu.Lock()
	if m.snap.Load().closed {
		m.mu.Unlock()
		discard()
		return len(old), ErrClosed
	}
	for _, n := range removed {
		n.removed.Store(true)
	}
	setTags()
	renamed := m.nameLocked(next, members)
	m.setNodesLocked(next)
	after := m.applyLocked(removed)
	m.mu.Unlock()
	m.finish(nil, &after)
	m.logNamed(renamed)

	for _, n := range added {
		m.log.Info("pgxha: node added", "addr", n.cfg.Addr, "name", n.cfg.Name)
		m.wg.Add(1)
		go n.run(nil)
	}
	for _, n := range removed {
		m.log.Info("pgxha: node removed", "addr", n.cfg.Addr, "name", n.name())
		n.cancel()
		m.wg.Add(1)
		go m.drain(n)
	}
	return len(next), nil
}

// restate, for a set of the same nodes, runs setTags and names the nodes
// of the connection string as members do (see nameLocked); when either
// changed, it rebuilds the routing view (told the new names, the decision
// core derives their roles again).
func (m *Manager) restate(nodes []*node, members []member, setTags func() bool) {
	m.mu.Lock()
	if m.snap.Load().closed {
		m.mu.Unlock()
		return
	}
	renamed := m.nameLocked(nodes, members)
	retagged := setTags()
	switch {
	case len(renamed) > 0:
		m.setNodesLocked(nodes)
	case retagged:
		m.core.Reconsider(time.Now())
	default:
		m.mu.Unlock()
		return
	}
	after := m.applyLocked(nil)
	m.mu.Unlock()
	m.finish(nil, &after)
	m.logNamed(renamed)
}

// sourceNamed is a node of the connection string and the name its source gave it.
type sourceNamed struct {
	addr, name string
}

// nameLocked gives each node of the connection string in nodes that the
// user gave no name (no per-node name, no WithReplicaName) the member name
// members report at its address, the address's first member's as for its
// tags: the master's walsender rows go by that name (Patroni's member
// name is its replicas' application_name), and a first set made of the
// connection string's hosts (the discoverer's first answer came later than
// New waited for it) has none. The node stays, with its pool and its
// connections, the master's included; the decision core re-describes it
// (see topology.Core.SetMembers). It returns the nodes whose name changed.
// Caller must hold m.mu.
func (m *Manager) nameLocked(nodes []*node, members []member) []sourceNamed {
	byAddr := make(map[string]string, len(members))
	for _, mb := range members {
		if _, ok := byAddr[mb.addr]; !ok {
			byAddr[mb.addr] = mb.name
		}
	}
	var out []sourceNamed
	for _, n := range nodes {
		if n.cfg.discovered || n.cfg.Name != "" {
			continue
		}
		if name, ok := byAddr[n.cfg.Addr]; ok && name != n.sourceName {
			n.sourceName = name
			out = append(out, sourceNamed{n.cfg.Addr, name})
		}
	}
	return out
}

// logNamed logs the names nameLocked gave.
func (m *Manager) logNamed(renamed []sourceNamed) {
	for _, r := range renamed {
		m.log.Info("pgxha: node named by the discoverer", "addr", r.addr, "name", r.name)
	}
}

// drain closes a node that left the set, owned by the Manager: once its
// check goroutine has stopped, it closes its pool, which waits until the
// connections acquired from it are released.
func (m *Manager) drain(n *node) {
	defer m.wg.Done()
	<-n.done
	n.closePool()
}

// setTags sets the node's tags from its source. It reports whether they
// changed.
func (n *node) setTags(tags map[string]string) bool {
	old := n.tags.Load()
	if old != nil && maps.Equal(*old, tags) || old == nil && len(tags) == 0 {
		return false
	}
	c := maps.Clone(tags)
	n.tags.Store(&c)
	return true
}

// discoveryState is the Manager's side of its Discoverer.
type discoveryState struct {
	source    string              // the Discoverer, for logs and Stat
	first     chan []member       // the first set reported, for NewWithConfig
	ready     chan struct{}       // closed once the first node set is made
	refresher discovery.Refresher // nil when the Discoverer cannot look on demand

	// Guarded by m.mu.
	err       error     // the last look's error, nil when it succeeded
	errAt     time.Time // when err was reported
	updatedAt time.Time // when the set was last reported
	count     int       // nodes of the last good set in use
	patroni   bool      // names are Patroni member names: replicas' application_name
	trusted   bool      // its nodes are the user's own naming (see member.trusted)
}

// DiscoveryStat is the state of the Manager's Discoverer.
type DiscoveryStat struct {
	// Source describes the Discoverer ("dns db.example.com port 5432"), ""
	// when the node set is the connection string's hosts.
	Source string
	// Nodes is how many nodes of its last good set the Manager uses (a
	// member that cannot be a node is left out); UpdatedAt is when that set
	// was reported.
	Nodes     int
	UpdatedAt time.Time
	// Err is why its last look failed, or why the set it reported could
	// not be used (empty, or no member could be a node): the Manager keeps
	// the last good set. Nil when it succeeded; ErrAt is when.
	Err   error
	ErrAt time.Time
}

// startDiscovery runs cfg.Discoverer, if any, on a goroutine the Manager
// owns, and returns the first node set it reports, waiting for it at most
// until ctx ends or CheckTimeout has passed (nil then: the connection
// string's hosts are the first set).
func (m *Manager) startDiscovery(ctx context.Context) []member {
	d := m.cfg.Discoverer
	if d == nil {
		return nil
	}
	ds := &m.discovery
	ds.source = fmt.Sprint(d)
	ds.first = make(chan []member, 1)
	ds.ready = make(chan struct{})
	ds.refresher, _ = d.(discovery.Refresher)
	_, ds.patroni = d.(*discovery.Patroni)
	switch d.(type) {
	case *discovery.DNS, *discovery.SRV, *discovery.Static:
		ds.trusted = true // addresses of names the user gave
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := d.Run(m.ctx, m.discovered); err != nil && m.ctx.Err() == nil {
			m.log.Error("pgxha: discovery cannot run; the node set stays as it is", "source", ds.source, "err", err)
			m.mu.Lock()
			ds.err, ds.errAt = err, time.Now()
			m.mu.Unlock()
		}
	}()
	timer := time.NewTimer(m.cfg.CheckTimeout)
	defer timer.Stop()
	select {
	case members := <-ds.first:
		return members
	case <-timer.C:
	case <-ctx.Done():
	}
	return nil
}

// discovered takes a State from the Discoverer (on its goroutine): the set,
// reconciled once the Manager's first set is made, and the error, kept and
// logged when it changes. A set none of whose members can be a node is an
// error too: the node set is never emptied by discovery.
func (m *Manager) discovered(st discovery.State) {
	ds := &m.discovery
	if len(st.Nodes) > m.cfg.MaxNodes {
		st = discovery.State{Err: fmt.Errorf("hasql: the discovered set holds %d nodes, over MaxNodes %d (hasql_max_nodes): %w",
			len(st.Nodes), m.cfg.MaxNodes, discovery.ErrTooManyNodes)}
	}
	if st.Err == nil && len(st.Nodes) == 0 {
		st.Err = errors.New("hasql: discovery: the set is empty")
	}
	if st.Err != nil {
		m.discoveryLooked(st.Err, -1) // no good set: keep what there is
		return
	}
	// A member's name and tags are what an API says, a member's own
	// among them (api_url), whose server may have got the password in
	// clear text: a name or tag that is, whole, the password is replaced,
	// as the Patroni APIs' own passwords are (a name that holds it beside
	// other words, postgres-0 beside the password postgres, is kept: it
	// routes reads).
	pw := m.cfg.PoolConfig.ConnConfig.Password
	members := make([]member, len(st.Nodes))
	for i, n := range st.Nodes {
		members[i] = member{addr: n.Addr, tags: clearTags(n.Tags, pw), trusted: ds.trusted}
		if ds.patroni {
			members[i].name = clearWhole(n.Name, pw)
		}
	}
	select {
	case ds.first <- members:
	default:
	}
	select {
	case <-ds.ready:
	case <-m.ctx.Done():
		return
	}
	count, err := m.reconcile(members)
	if err == ErrClosed {
		return
	}
	m.discoveryLooked(err, count)
}

// discoveryLooked records the outcome of a look: err, or count nodes in the
// set (count < 0: no set was reported). It logs a change of error.
func (m *Manager) discoveryLooked(err error, count int) {
	ds := &m.discovery
	now := time.Now()
	m.mu.Lock()
	prevErr := ds.err
	ds.err = err
	if err != nil {
		ds.errAt = now
	} else if count >= 0 {
		ds.updatedAt, ds.count = now, count
	}
	m.mu.Unlock()
	switch {
	case err != nil && (prevErr == nil || prevErr.Error() != err.Error()):
		m.log.Warn("pgxha: discovery failed; keeping the last good node set", "source", ds.source, "err", err)
	case err == nil && prevErr != nil:
		m.log.Info("pgxha: discovery works again", "source", ds.source)
	}
}

// refreshDiscovery asks the Discoverer to look again (a node failed: it
// may have left the set), when it can.
func (m *Manager) refreshDiscovery() {
	if r := m.discovery.refresher; r != nil {
		r.Refresh()
	}
}

// discoveryStatLocked returns the DiscoveryStat. Caller must hold m.mu.
func (m *Manager) discoveryStatLocked() DiscoveryStat {
	ds := &m.discovery
	return DiscoveryStat{Source: ds.source, Nodes: ds.count, UpdatedAt: ds.updatedAt, Err: ds.err, ErrAt: ds.errAt}
}

// tagMap returns the node's tags (read-only), nil when it has none.
func (n *node) tagMap() map[string]string {
	if p := n.tags.Load(); p != nil {
		return *p
	}
	return nil
}

// noLoadBalance reports Patroni's noloadbalance tag: no reads; the node
// may still be master.
func (n *node) noLoadBalance() bool {
	return discovery.IsTrue(n.tagMap()[discovery.TagNoLoadBalance])
}

// inZone returns the nodes whose zone tag is zone, or all of them when none
// is: the caller's zone is preferred, the others are the fallback.
func inZone(nodes []*node, zone string) []*node {
	var in []*node
	for _, n := range nodes {
		if n.tagMap()[discovery.TagZone] == zone {
			in = append(in, n)
		}
	}
	if len(in) == 0 {
		return nodes
	}
	return in
}

// hasTags reports whether the node has every tag of want.
func (n *node) hasTags(want [][2]string) bool {
	if len(want) == 0 {
		return true
	}
	tags := n.tagMap()
	for _, kv := range want {
		if v, ok := tags[kv[0]]; !ok || v != kv[1] {
			return false
		}
	}
	return true
}

// clearWhole returns "xxxxx" for a text that is pw whole, else text.
func clearWhole(text, pw string) string {
	if pw != "" && text == pw {
		return "xxxxx"
	}
	return text
}

// clearTags returns tags with every key and value that is pw whole
// replaced (see clearWhole), a copy when that changed any.
func clearTags(tags map[string]string, pw string) map[string]string {
	if pw == "" {
		return tags
	}
	changed := false
	for k, v := range tags {
		if k == pw || v == pw {
			changed = true
			break
		}
	}
	if !changed {
		return tags
	}
	out := make(map[string]string, len(tags))
	for k, v := range tags {
		out[clearWhole(k, pw)] = clearWhole(v, pw)
	}
	return out
}
