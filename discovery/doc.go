// Package discovery says where the nodes of a cluster are, and follows them
// as they change while a service runs: new replicas, replaced hosts, a
// scaled-out read pool.
//
// A [Discoverer] reports [State] values: the node set ([Node]: a
// "host:port", an optional name, tags, and what the source knows of the
// node's role and lag) and the error of its last look, if any. The hasql
// Manager owns it: it calls [Discoverer.Run] on a goroutine of its own with
// a context that ends when the Manager closes, and reconciles each new set
// (a new node gets a pool and a check, a removed one is drained and
// closed). A Discoverer that also implements [Refresher] is asked to look
// again when a node fails. A look that fails keeps the last good set and
// reports the error; a look that finds no node is such a failure
// ([ErrNoNodes]), so a broken source never empties a cluster.
//
// # Built-in Discoverers
//
//   - [Static]: a fixed list, what a connection string's hosts become.
//   - [DNS]: every A and AAAA address of a name is a node, all on one port:
//     a Kubernetes headless service, a round-robin DNS name.
//   - [SRV]: the targets and ports of an SRV record
//     (_postgresql._tcp.<name>), each target's addresses a node.
//   - [Patroni]: the members of a Patroni cluster, from GET /cluster on any
//     member's REST API, with their roles, lag and tags (noloadbalance,
//     nofailover, the operator's own).
//
// [FromSettings] builds them from a connection string's hasql_discovery*
// settings; NewDNS, NewSRV and NewPatroni from a config struct, where a
// resolver or an HTTP client of one's own can be given.
//
// # Writing a Discoverer
//
// Run reports the first State, then each change, and returns when its
// context ends, leaving no goroutine behind:
//
//	type fromFile struct{ path string }
//
//	func (f fromFile) Run(ctx context.Context, update func(discovery.State)) error {
//		ticker := time.NewTicker(10 * time.Second)
//		defer ticker.Stop()
//		var last discovery.State
//		for {
//			st := f.read() // a discovery.State: nodes, or an error and the last nodes
//			if !discovery.Equal(st.Nodes, last.Nodes) || (st.Err == nil) != (last.Err == nil) {
//				update(st)
//				last = st
//			}
//			select {
//			case <-ctx.Done():
//				return nil
//			case <-ticker.C:
//			}
//		}
//	}
//
// [Diff] tells what changed between two sets, node by node, by address.
package discovery
