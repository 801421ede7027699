package testcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// scaler is a backend that adds and removes nodes while the cluster runs.
type scaler interface {
	// makeNode sets up the driver of a new node numbered i (named
	// "n<i+1>"), running nothing yet; its teardown and close undo it.
	makeNode(i int) (nodeDriver, error)
	// join starts n, already listed in the cluster, as a replica of the
	// master and returns once it streams.
	join(ctx context.Context, n *Node) error
	// leave stops n for good and takes it out of the cluster's view
	// (replication, the orchestrator's membership); n is still listed.
	leave(ctx context.Context, n *Node) error
}

func (c *Cluster) scaler() scaler {
	if s, ok := c.orchestrator.(scaler); ok {
		return s
	}
	if c.opts.Backend == BackendLocal {
		return localScaler{c}
	}
	return nil
}

// AddNode adds a new replica to the running cluster and returns once it
// streams from the master: with the Patroni backend a new member (its own
// Patroni, REST API and fault proxy) that Patroni bootstraps from the
// leader; with the local backend an asynchronous replica copied from the
// master with pg_basebackup. Its name is the next unused one (n4 after
// n1-n3, never the name of a removed node); Nodes lists it last. The
// compose backend cannot add nodes.
func (c *Cluster) AddNode(ctx context.Context) (*Node, error) {
	s := c.scaler()
	if s == nil {
		return nil, fmt.Errorf("testcluster: AddNode: not supported by the %s backend", c.opts.Backend)
	}
	c.mu.Lock()
	stopped := c.stopped
	c.nodesMu.Lock()
	i := c.made
	c.made++
	c.nodesMu.Unlock()
	c.mu.Unlock()
	if stopped {
		return nil, errors.New("testcluster: AddNode: the cluster is stopped")
	}
	begin := time.Now()
	drv, err := s.makeNode(i)
	if err != nil {
		return nil, fmt.Errorf("testcluster: AddNode: %w", err)
	}
	n := &Node{c: c, name: "n" + fmt.Sprint(i+1), index: i, drv: drv}
	// Listed before it starts, so that Stop tears it down whatever
	// happens next.
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil, errors.Join(errors.New("testcluster: AddNode: the cluster is stopped"), drv.teardown(), drv.close())
	}
	c.nodesMu.Lock()
	c.nodes = append(slices.Clone(c.nodes), n)
	c.nodesMu.Unlock()
	c.mu.Unlock()

	n.opMu.Lock()
	err = s.join(ctx, n)
	n.opMu.Unlock()
	if err != nil {
		err = fmt.Errorf("testcluster: AddNode %s: %w; log tail:\n%s", n.name, err, drv.logTail(30))
		c.unlist(n)
		return nil, errors.Join(err, drv.teardown(), drv.close())
	}
	n.standby.Store(true)
	c.opts.Logf("testcluster: added %s in %s: %s", n.name, time.Since(begin).Round(time.Millisecond), c.layout())
	return n, nil
}

// RemoveNode removes a node from the cluster for good: it is stopped
// (clients get 57P01, then refused connections), taken out of replication
// and of the orchestrator's view (Patroni: its member key is deleted, so
// /cluster no longer lists it and the leader drops its replication slot),
// its proxy closed and its data directory removed; Nodes no longer lists
// it. The local backend removes replicas only (fail over first); a
// synchronous one is replaced by the next running replica, if any, to keep
// the number of synchronous replicas. With Patroni, removing the leader
// hands its role over: RemoveNode returns once another member leads. The
// last node cannot be removed.
func (c *Cluster) RemoveNode(ctx context.Context, n *Node) error {
	s := c.scaler()
	if s == nil {
		return fmt.Errorf("testcluster: RemoveNode: not supported by the %s backend", c.opts.Backend)
	}
	nodes := c.all()
	if !slices.Contains(nodes, n) {
		return fmt.Errorf("testcluster: RemoveNode: %v is not a node of the cluster", n)
	}
	if len(nodes) == 1 {
		return fmt.Errorf("testcluster: RemoveNode: %s is the last node", n.name)
	}
	return n.op("remove", func() error {
		err := s.leave(ctx, n)
		if err != nil && n.drv.running() {
			return err // refused, or could not stop it: nothing is removed
		}
		// Stopped: it goes, even if it could not be taken out of every view.
		c.unlist(n)
		err = errors.Join(err, n.drv.teardown(), n.drv.close())
		if dd, ok := n.drv.(serverProcess); ok {
			err = errors.Join(err, os.RemoveAll(dd.dataDirectory()))
		}
		return err
	})
}

// unlist takes n out of the node list and the bookkeeping.
func (c *Cluster) unlist(n *Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodesMu.Lock()
	c.nodes = slices.DeleteFunc(slices.Clone(c.nodes), func(o *Node) bool { return o == n })
	c.nodesMu.Unlock()
	if c.master == n {
		c.master = nil
	}
	c.syncNames = slices.DeleteFunc(slices.Clone(c.syncNames), func(s string) bool { return s == n.name })
}

// localScaler adds and removes local nodes.
type localScaler struct{ c *Cluster }

func (s localScaler) makeNode(i int) (nodeDriver, error) { return s.c.newLocalNode(i) }

func (s localScaler) join(ctx context.Context, n *Node) error {
	c := s.c
	master := c.Master()
	if master == nil || !master.drv.running() {
		return errors.New("no running master to copy")
	}
	l := n.drv.(*localNode)
	if err := l.reclone(ctx, master); err != nil {
		return err
	}
	if err := l.makeStandby(master); err != nil {
		return err
	}
	if err := l.start(ctx); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	return c.waitStreaming(ctx, master, []string{n.name}, nil)
}

func (s localScaler) leave(ctx context.Context, n *Node) error {
	c := s.c
	master := c.Master()
	if n == master {
		return fmt.Errorf("%s is the master: fail over first", n.name)
	}
	if err := n.drv.stop(); err != nil {
		return err
	}
	c.mu.Lock()
	wasSync := slices.Contains(c.syncNames, n.name)
	sync := slices.DeleteFunc(slices.Clone(c.syncNames), func(s string) bool { return s == n.name })
	c.mu.Unlock()
	if !wasSync || master == nil {
		return nil
	}
	for _, o := range c.all() {
		if o != n && o != master && o.drv.running() && !slices.Contains(sync, o.name) {
			sync = append(sync, o.name)
			break
		}
	}
	return c.setSync(ctx, master, sync)
}
