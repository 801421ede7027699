// Command discovery shows a Manager following a node set that changes while
// it runs: the nodes are the A records of a DNS name (as a Kubernetes
// headless service gives them), served by a real DNS server (dnsmasq) on
// loopback. Records are added and removed; the Manager adds and drains
// nodes without a restart, and follows a failover to the node that joined
// last.
//
//	go run ./examples/discovery
//
// It starts its own 3-node cluster and dnsmasq (Debian's package: `make
// deps-dnsmasq` installs it), and removes both when done.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
	"github.com/pgxha/pgxha/testcluster/dnsmasq"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "discovery:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	fmt.Println("Starting a local cluster (1 master, 1 sync replica, 1 async replica) and a DNS server...")
	c, err := testcluster.Start(ctx, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	if err != nil {
		return err
	}
	defer c.Stop()
	dns, err := dnsmasq.Start(ctx, dnsmasq.Options{})
	if err != nil {
		return err
	}
	defer dns.Stop()

	// Each node answers on an address of its own, all on one port, as pods
	// behind a headless service do.
	ips := []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}
	port, err := freePort(ips)
	if err != nil {
		return err
	}
	for i, n := range c.Nodes() {
		if _, err := n.AliasAt(net.JoinHostPort(ips[i], strconv.Itoa(port))); err != nil {
			return err
		}
	}
	name := dns.Name("db")
	if err := dns.SetHost(ctx, name, ips[0], ips[1]); err != nil {
		return err
	}
	fmt.Printf("%s has A records %s and %s\n\n", name, ips[0], ips[1])

	// In a service: postgres://app@db.default.svc:5432/app?hasql_discovery=dns.
	// Here the resolver is pointed at the DNS server on loopback.
	d, err := discovery.NewDNS(discovery.DNSConfig{Name: name, Port: uint16(port), Interval: 200 * time.Millisecond,
		Resolver: dns.Resolver()})
	if err != nil {
		return err
	}
	dsn := fmt.Sprintf("postgres://postgres:pgxha@%s:%d/postgres?sslmode=disable&hasql_check_interval=100ms", name, port)
	m, err := hasql.New(ctx, dsn, hasql.WithDiscoverer(d))
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.WaitReady(ctx, 1, 1); err != nil {
		return err
	}
	show(m, "The Manager's nodes:")

	if err := dns.SetHost(ctx, name, ips...); err != nil {
		return err
	}
	fmt.Printf("Record added: %s\n", ips[2])
	if err := waitFor(ctx, m, func(st []hasql.NodeStatus) bool { return len(st) == 3 && st[2].Role.IsReplica() }); err != nil {
		return err
	}
	show(m, "The new node has a pool and a check, and serves reads once checked:")
	if _, err := m.Master().Exec(ctx, "CREATE TABLE IF NOT EXISTS events (id bigserial PRIMARY KEY)"); err != nil {
		return err
	}
	if err := m.WaitCaughtUp(ctx); err != nil {
		return err
	}
	for i := 0; i < 3; i++ {
		conn, err := m.AcquireReplica(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("  read served by %s\n", conn.Conn().PgConn().Conn().RemoteAddr())
		conn.Release()
	}
	fmt.Println()

	if err := dns.SetHost(ctx, name, ips[0], ips[2]); err != nil {
		return err
	}
	fmt.Printf("Record removed: %s\n", ips[1])
	if err := waitFor(ctx, m, func(st []hasql.NodeStatus) bool { return len(st) == 2 }); err != nil {
		return err
	}
	show(m, "Its node gets no new acquire; its pool closes once its connections are back:")

	fmt.Printf("Killing the master and promoting %s, the node that joined last...\n", ips[2])
	if err := c.Nodes()[0].Kill(); err != nil {
		return err
	}
	if err := c.Failover(ctx, c.Nodes()[2]); err != nil {
		return err
	}
	newMaster := net.JoinHostPort(ips[2], strconv.Itoa(port))
	if err := waitFor(ctx, m, func([]hasql.NodeStatus) bool { return m.Stat().Master == newMaster }); err != nil {
		return err
	}
	tag, err := m.Master().Exec(ctx, "INSERT INTO events DEFAULT VALUES")
	if err != nil {
		return err
	}
	fmt.Printf("  %s served by the new master %s\n\n", tag, newMaster)
	show(m, "The Manager's nodes:")
	return nil
}

func show(m *hasql.Manager, title string) {
	fmt.Println(title)
	for _, n := range m.Nodes() {
		state := n.Role.String()
		if !n.Up {
			state = "down"
		}
		fmt.Printf("  %-18s %s\n", n.Addr, state)
	}
	fmt.Println()
}

// waitFor waits until ok holds for the Manager's nodes, waking on each
// change of its view.
func waitFor(ctx context.Context, m *hasql.Manager, ok func([]hasql.NodeStatus) bool) error {
	for {
		changed := m.Changed()
		if ok(m.Nodes()) {
			return nil
		}
		select {
		case <-changed:
		case <-time.After(100 * time.Millisecond): // the node set itself may change without a routing change
		case <-ctx.Done():
			return fmt.Errorf("waiting for the nodes: %w (have %s)", ctx.Err(), describe(m.Nodes()))
		}
	}
}

func describe(nodes []hasql.NodeStatus) string {
	parts := make([]string, len(nodes))
	for i, n := range nodes {
		parts[i] = n.Addr + "=" + n.Role.String()
	}
	return strings.Join(parts, " ")
}

// freePort finds a port free on every one of ips.
func freePort(ips []string) (int, error) {
	for try := 0; try < 20; try++ {
		l, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		ok := true
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port free on %s", strings.Join(ips, ", "))
}
