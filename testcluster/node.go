package testcluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Node is one PostgreSQL server of a Cluster. Its chaos operations act on the
// real server process or its network path; they are safe for concurrent use.
type Node struct {
	c     *Cluster
	name  string
	index int
	drv   nodeDriver

	opMu sync.Mutex // serializes chaos operations on this node

	promotedAt atomic.Int64 // unix nanoseconds, when Promote last returned

	// standby: the data directory is configured as a standby (set when
	// the cluster starts and by a rebuild, cleared by Promote). A stopped
	// standby is started as it is; a stopped former master is rewound.
	standby atomic.Bool
}

// PromotedAt is when the last Promote of this node (by Promote or Failover)
// returned, the promotion complete; zero if never.
func (n *Node) PromotedAt() time.Time {
	if ns := n.promotedAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Name is the node's name: n1, n2, ... It is the server's cluster_name and
// its walreceiver's application_name.
func (n *Node) Name() string { return n.name }

// Index is the node's number in the order nodes were made (0 for the first
// master, then the replicas of Start, then those of AddNode): its position
// in Cluster.Nodes and in DSN until a node is removed.
func (n *Node) Index() int { return n.index }

// Addr is the node's address in DSN, "127.0.0.1:port": its fault proxy.
func (n *Node) Addr() string { return n.drv.addr() }

// DirectAddr is the server's own address, which bypasses the fault proxy
// (partitions and latency do not apply to it).
func (n *Node) DirectAddr() string { return n.drv.directAddr() }

// DSN is a single-host URL for this node, through its fault proxy.
func (n *Node) DSN() string { return n.c.dsn([]string{n.Addr()}) }

// DirectDSN is a single-host URL for this node that bypasses the fault proxy.
func (n *Node) DirectDSN() string { return n.c.dsn([]string{n.DirectAddr()}) }

// NetworkAddr is the node's address on its container network ("ip:5432"),
// reached from this host through the Docker bridge with nothing between:
// the faults made in the container's network namespace (Partition) reach
// every byte and every TCP keepalive, where Addr's published port goes
// through Docker's proxy, whose own kernel answers keepalives. Only the
// compose backend has it; the address holds until the container restarts.
func (n *Node) NetworkAddr() (string, error) {
	a, ok := n.drv.(interface{ networkAddr() (string, error) })
	if !ok {
		return "", fmt.Errorf("testcluster: NetworkAddr: not supported by the %s backend", n.c.opts.Backend)
	}
	return a.networkAddr()
}

// DSNFor is the cluster's URL naming addrs as its hosts.
func (c *Cluster) DSNFor(addrs ...string) string { return c.dsn(addrs) }

// Running reports whether the server process is up (a paused server counts).
func (n *Node) Running() bool { return n.drv.running() }

// String returns the node's name.
func (n *Node) String() string { return n.name }

// patroniDriver is implemented by the drivers of nodes that Patroni runs.
type patroniDriver interface {
	apiURL() string
	setTags(ctx context.Context, tags map[string]any) error
}

// PatroniURL is the base URL of the node's Patroni REST API
// ("http://127.0.0.1:port"), or "" when Patroni does not run the cluster.
func (n *Node) PatroniURL() string {
	if pd, ok := n.drv.(patroniDriver); ok {
		return pd.apiURL()
	}
	return ""
}

// SetPatroniTags replaces the node's Patroni tags (nofailover,
// noloadbalance, nosync, replicatefrom, or any of the operator's own; those
// not given are false or absent) and, when the node runs, makes Patroni
// reload its configuration and returns once Patroni's /cluster shows them.
// Patroni lists a false nofailover, noloadbalance, clonefrom or nosync as
// no tag at all. A node that does not run gets them when it starts. It
// fails when Patroni does not run the cluster.
func (n *Node) SetPatroniTags(ctx context.Context, tags map[string]any) error {
	pd, ok := n.drv.(patroniDriver)
	if !ok {
		return fmt.Errorf("testcluster: %s: SetPatroniTags: the cluster does not run Patroni (backend %s)", n.name, n.c.opts.Backend)
	}
	return n.op("set Patroni tags", func() error { return pd.setTags(ctx, tags) })
}

func (n *Node) op(what string, f func() error) error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	begin := time.Now()
	if err := f(); err != nil {
		return fmt.Errorf("testcluster: %s %s: %w", what, n.name, err)
	}
	n.c.opts.Logf("testcluster: %s %s (%s)", what, n.name, time.Since(begin).Round(time.Millisecond))
	return nil
}

// Kill crashes the node: its clients' connections are reset, the postmaster
// and every backend get SIGKILL, and new connections are refused until Start.
func (n *Node) Kill() error { return n.op("kill", n.drv.kill) }

// Stop shuts the node down cleanly (fast shutdown: clients get 57P01), then
// refuses connections until Start.
func (n *Node) Stop() error { return n.op("stop", n.drv.stop) }

// Start starts a stopped or killed node with its data directory as it is (a
// crashed master comes back as a master: see Cluster.Rejoin to bring it back
// as a replica). It returns once the server accepts connections.
func (n *Node) Start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return n.op("start", func() error { return n.drv.start(ctx) })
}

// Pause freezes the postmaster and every backend (SIGSTOP): connections are
// accepted by the kernel but nothing answers, existing ones hang.
func (n *Node) Pause() error { return n.op("pause", n.drv.pause) }

// Resume undoes Pause (SIGCONT).
func (n *Node) Resume() error { return n.op("resume", n.drv.resume) }

// Partition black-holes the node's network path: connections through its
// proxy, old and new, get no byte in either direction, and no close or reset
// crosses. Replication from this node (it goes through the proxy) stops too.
func (n *Node) Partition() error { return n.op("partition", n.drv.partition) }

// Heal ends a partition; held bytes and closes flow again.
func (n *Node) Heal() error { return n.op("heal", n.drv.heal) }

// SetLatency delays every chunk of bytes through the node's proxy by d in
// each direction, so a round trip takes 2d longer. 0 removes the delay.
func (n *Node) SetLatency(d time.Duration) error {
	return n.op("set latency of", func() error { return n.drv.setLatency(d) })
}

// Promote promotes the node and records it as the cluster's master. It
// returns as soon as the server is out of recovery (pg_promote(wait => true)
// would poll in steps of 100ms): PromotedAt is then exact to a millisecond.
// Other replicas are not repointed: see Cluster.Failover. Promoting a replica
// while the master runs makes a split brain, on purpose.
func (n *Node) Promote(ctx context.Context) error {
	return n.op("promote", func() error {
		conn, err := n.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_promote(false)").Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return errors.New("pg_promote returned false")
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			var inRecovery bool
			if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
				return err
			}
			if !inRecovery {
				break
			}
			if time.Now().After(deadline) {
				return errors.New("still in recovery 60s after pg_promote")
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
		n.promotedAt.Store(time.Now().UnixNano())
		n.standby.Store(false)
		n.c.mu.Lock()
		n.c.master, n.c.syncNames = n, nil
		n.c.mu.Unlock()
		return nil
	})
}

// PauseReplay pauses WAL replay on a replica (pg_wal_replay_pause), so its
// replay lag grows while WAL keeps arriving.
func (n *Node) PauseReplay(ctx context.Context) error {
	return n.op("pause replay on", func() error { return n.exec(ctx, "SELECT pg_wal_replay_pause()") })
}

// ResumeReplay resumes WAL replay on a replica.
func (n *Node) ResumeReplay(ctx context.Context) error {
	return n.op("resume replay on", func() error { return n.exec(ctx, "SELECT pg_wal_replay_resume()") })
}

// Conn opens a connection to the node that bypasses its fault proxy, for
// tests that inspect or change a node whatever state its network is in.
// The caller closes it.
func (n *Node) Conn(ctx context.Context) (*pgx.Conn, error) {
	return n.c.connect(ctx, n.DirectAddr())
}

// Alias opens one more address for the node: a proxy to the same server,
// without faults, closed by Stop. A manager given many aliases sees as many
// nodes: scale tests use it to put 64 nodes on a 3-node cluster. Only the
// local backend has it.
func (n *Node) Alias() (string, error) {
	a, ok := n.drv.(interface{ alias() (string, error) })
	if !ok {
		return "", fmt.Errorf("testcluster: Alias: not supported by the %s backend", n.c.opts.Backend)
	}
	return a.alias()
}

// AliasAt is Alias on a given listen address ("127.0.0.12:6432"), for
// tests that need the node under an address of their choosing (a DNS name
// whose A records are loopback addresses, all on one port).
func (n *Node) AliasAt(listen string) (string, error) {
	a, ok := n.drv.(interface{ aliasAt(string) (string, error) })
	if !ok {
		return "", fmt.Errorf("testcluster: AliasAt: not supported by the %s backend", n.c.opts.Backend)
	}
	return a.aliasAt(listen)
}

// Logs returns the last lines of the node's server log.
func (n *Node) Logs(lines int) string { return n.drv.logTail(lines) }

func (n *Node) exec(ctx context.Context, sql string) error {
	conn, err := n.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

func (n *Node) queryRow(ctx context.Context, sql string, dest ...any) error {
	conn, err := n.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql).Scan(dest...)
}

// Faults are the chaos operations in force on a node.
type Faults struct {
	Paused      bool          // Pause: the node hangs
	Partitioned bool          // Partition: its traffic is black-holed
	Latency     time.Duration // SetLatency, each way
}

// String lists the faults in force, "" for none: "paused, partitioned,
// latency 50ms".
func (f Faults) String() string {
	var out []string
	if f.Paused {
		out = append(out, "paused")
	}
	if f.Partitioned {
		out = append(out, "partitioned")
	}
	if f.Latency > 0 {
		out = append(out, "latency "+f.Latency.String())
	}
	return strings.Join(out, ", ")
}

// Faults returns the chaos operations in force on the node.
func (n *Node) Faults() Faults { return n.drv.faultState() }

// NodeState is what a node says of itself, for status displays.
type NodeState struct {
	Name string
	Addr string
	// Role is "master" (the cluster's master, per Cluster.Master), "sync",
	// "async" (per that master's pg_stat_replication), "detached" (in
	// recovery, not listed by that master: left on an old timeline, or
	// streaming from another node), "replica" (in recovery while the
	// master does not answer), "stale master" (writable while the
	// cluster's master answers too, on an older timeline: a master left
	// behind by a failover), "split brain" (writable while the cluster's
	// master answers too, on its timeline or a newer one), "paused" (a
	// paused node is not asked), or "down" (Err says why). A writable node
	// is "master" when the cluster's master does not answer.
	Role     string
	Timeline int
	// Faults are the chaos operations in force on the node.
	Faults Faults
	Err    error
}

// statusTimeout bounds how long Status waits for one node: a hung node
// (paused by other means, a partition past the direct address) costs that,
// once, not once per node.
const statusTimeout = 2 * time.Second

// Status asks every node for its role, all at once, each within ctx and
// statusTimeout. Nodes are asked directly, bypassing fault proxies (the
// compose backend's partition lets a second port through); a paused node is
// not asked. A slow or hung node never makes another one look down.
func (c *Cluster) Status(ctx context.Context) []NodeState {
	nodes := c.all()
	master := c.Master()
	states := make([]NodeState, len(nodes))
	type answer struct {
		writable bool
		sync     map[string]string // application_name -> sync_state, from a writable node
	}
	answers := make([]answer, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		states[i] = NodeState{Name: n.name, Addr: n.Addr(), Faults: n.Faults()}
		if states[i].Faults.Paused {
			states[i].Role = "paused"
			continue
		}
		wg.Add(1)
		go func() { // owned by Status, which waits for it
			defer wg.Done()
			nctx, cancel := context.WithTimeout(ctx, statusTimeout)
			defer cancel()
			st := &states[i]
			conn, err := n.Conn(nctx)
			if err != nil {
				st.Role, st.Err = "down", err
				return
			}
			defer conn.Close(context.Background())
			var inRecovery bool
			err = conn.QueryRow(nctx, `SELECT pg_is_in_recovery(),
				CASE WHEN pg_is_in_recovery() THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0)
				ELSE `+currentTimeline+` END`).Scan(&inRecovery, &st.Timeline)
			if err == nil && !inRecovery {
				answers[i].writable = true
				var rs map[string]string
				if rs, err = replicationStates(nctx, conn); err == nil {
					answers[i].sync = map[string]string{}
					for app, state := range rs {
						_, syncState, _ := strings.Cut(state, "/")
						answers[i].sync[app] = syncState
					}
				}
			}
			switch {
			case err != nil:
				st.Role, st.Err, st.Timeline = "down", err, 0
			case inRecovery:
				st.Role = "replica"
			default:
				st.Role = "master"
			}
		}()
	}
	wg.Wait()
	// The cluster's master names the sync states, and any other writable
	// node is marked for what it is.
	var syncStates map[string]string
	masterTimeline, masterAnswered := 0, false
	for i, n := range nodes {
		if n == master && answers[i].writable {
			syncStates, masterTimeline, masterAnswered = answers[i].sync, states[i].Timeline, true
		}
	}
	for i, n := range nodes {
		st := &states[i]
		switch {
		case st.Role == "master" && n != master && masterAnswered && st.Timeline < masterTimeline:
			st.Role = "stale master"
		case st.Role == "master" && n != master && masterAnswered:
			st.Role = "split brain"
		case st.Role == "replica":
			switch syncStates[st.Name] {
			case "sync", "quorum":
				st.Role = "sync"
			case "async", "potential":
				st.Role = "async"
			case "":
				if masterAnswered {
					st.Role = "detached" // the master does not list it
				}
			}
		}
	}
	return states
}
