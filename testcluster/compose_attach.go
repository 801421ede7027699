package testcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// attachCompose makes c the running compose project c.opts.ComposeProject
// (started by `make compose-up`, or by `docker compose -p NAME up`), as it
// is now: its nodes are the services that have a container, their
// addresses the published ports, the credentials and image those of its
// containers. The master is the writable node (the one on the newest
// timeline if several); with none, the node the replicas stream from. The
// synchronous replicas are those the master's synchronous_standby_names
// names. Nothing is started, stopped or changed.
func (c *Cluster) attachCompose(ctx context.Context) error {
	project := c.opts.ComposeProject
	file, err := composeFile()
	if err != nil {
		return err
	}
	tool, err := findComposeTool()
	if err != nil {
		return err
	}
	if err := dockerAnswers(ctx); err != nil {
		return err
	}
	p := &composeProject{
		c:        c,
		tool:     tool,
		file:     file,
		scripts:  filepath.Join(filepath.Dir(file), "testcluster", "compose"),
		name:     project,
		attached: true,
	}
	for i, name := range composeServices {
		id, err := composeContainer(ctx, project, name)
		if err != nil {
			if i == 0 {
				return fmt.Errorf("testcluster: no compose project %q with a master service n1 on this machine (start it with `make compose-up`): %w", project, err)
			}
			break
		}
		n := &composeNode{p: p, name: name, container: id}
		if n.port, err = publishedPort(ctx, id, composeServerPort); err != nil {
			return fmt.Errorf("testcluster: %s: %w", name, err)
		}
		if n.directPort, err = publishedPort(ctx, id, composeDirectPort); err != nil {
			n.directPort = n.port // a file without the direct ports: no way past a partition
		}
		c.nodes = append(c.nodes, &Node{c: c, name: name, index: i, drv: n})
	}
	if err := p.adopt(ctx); err != nil {
		return err
	}
	c.dir, err = os.MkdirTemp(c.opts.Dir, "pgxha-compose-"+project+"-")
	if err != nil {
		return fmt.Errorf("testcluster: temp dir: %w", err)
	}
	for _, node := range c.nodes {
		n := node.drv.(*composeNode)
		if st, err := n.state(ctx); err == nil && st == "running" {
			n.faults = n.readFaults(ctx)
		} else if err == nil && st == "paused" {
			n.faults = composeFaults{unknown: true}
		}
	}
	master, syncNames := c.findComposeMaster(ctx)
	c.mu.Lock()
	c.master, c.syncNames = master, syncNames
	c.mu.Unlock()
	if master == nil {
		c.master = c.nodes[0]
	}
	// What Failover and Converge keep or restore: the synchronous replicas
	// the master names, and at least the file's one (a master promoted by
	// hand names none).
	c.opts.Replicas = len(c.nodes) - 1
	c.opts.SyncReplicas = max(len(syncNames), min(1, c.opts.Replicas))
	c.opts.Logf("testcluster: attached to compose project %s: %s", project, c.layout())
	return nil
}

// adopt takes the credentials, image and network of the running project,
// so that the compose commands run on it (start, one-off containers) see
// the configuration it was started with.
func (p *composeProject) adopt(ctx context.Context) error {
	c := p.c
	first := c.nodes[0].drv.(*composeNode)
	out, err := runCommand(ctx, nil, "docker", "inspect", "-f", "{{json .Config.Env}}|{{.Config.Image}}", first.container)
	if err != nil {
		return fmt.Errorf("testcluster: inspect %s: %w", first.name, err)
	}
	envJSON, image, _ := strings.Cut(strings.TrimSpace(out), "|")
	var env []string
	if err := json.Unmarshal([]byte(envJSON), &env); err != nil {
		return fmt.Errorf("testcluster: inspect %s: %w", first.name, err)
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "POSTGRES_USER":
			c.opts.User = v
		case "POSTGRES_PASSWORD":
			c.opts.Password = v
		case "POSTGRES_DB":
			c.opts.Database = v
		}
	}
	p.env = append(os.Environ(),
		"PGXHA_PG_IMAGE="+image,
		"PGXHA_PG_USER="+c.opts.User,
		"PGXHA_PG_PASSWORD="+c.opts.Password,
		"PGXHA_PG_DATABASE="+c.opts.Database,
	)
	// The project's network, by its label: its subnet is PGXHA_NET.
	nets, err := runCommand(ctx, nil, "docker", "network", "ls", "-q", "--filter", "label="+composeLabel+"="+p.name)
	if err != nil || len(strings.Fields(nets)) != 1 {
		return fmt.Errorf("testcluster: the network of compose project %s: %v %s", p.name, err, strings.TrimSpace(nets))
	}
	subnet, err := runCommand(ctx, nil, "docker", "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", strings.TrimSpace(nets))
	if err != nil {
		return fmt.Errorf("testcluster: the network of compose project %s: %w", p.name, err)
	}
	for _, cidr := range strings.Fields(subnet) {
		if ip, _, err := net.ParseCIDR(cidr); err == nil && ip.To4() != nil {
			ip4 := ip.To4()
			p.env = append(p.env, fmt.Sprintf("PGXHA_NET=%d.%d.%d", ip4[0], ip4[1], ip4[2]))
			break
		}
	}
	for _, node := range c.nodes {
		n := node.drv.(*composeNode)
		up := strings.ToUpper(n.name)
		p.env = append(p.env, fmt.Sprintf("PGXHA_%s_PORT=%d", up, n.port), fmt.Sprintf("PGXHA_%s_DIRECT_PORT=%d", up, n.directPort))
	}
	return nil
}

// publishedPort returns the port of this host that a container's port is
// published on, from its configuration (so also while it is stopped).
func publishedPort(ctx context.Context, id string, port int) (int, error) {
	out, err := runCommand(ctx, nil, "docker", "inspect", "-f", "{{json .HostConfig.PortBindings}}", id)
	if err != nil {
		return 0, err
	}
	var bindings map[string][]struct{ HostIP, HostPort string }
	if err := json.Unmarshal([]byte(out), &bindings); err != nil {
		return 0, fmt.Errorf("port bindings %q: %w", strings.TrimSpace(out), err)
	}
	for _, b := range bindings[strconv.Itoa(port)+"/tcp"] {
		if n, err := strconv.Atoi(b.HostPort); err == nil && n > 0 {
			return n, nil
		}
	}
	return 0, fmt.Errorf("port %d is not published", port)
}

var syncNamesPattern = regexp.MustCompile(`(?i)^\s*(?:(?:FIRST|ANY)\s+\d+\s*)?\(?([^)]*)\)?\s*$`)

// findComposeMaster finds the master of an attached cluster and the
// synchronous replicas it names: the writable node on the newest timeline;
// with none answering, the node most replicas stream from (nil when none
// can tell).
func (c *Cluster) findComposeMaster(ctx context.Context) (*Node, []string) {
	type answer struct {
		writable bool
		timeline int
		sync     string
		upstream string
	}
	answers := map[*Node]answer{}
	for _, n := range c.all() {
		if st := n.Faults(); st.Paused {
			continue
		}
		var a answer
		var conninfo string
		err := n.queryRow(ctx, `SELECT NOT pg_is_in_recovery(),
			CASE WHEN pg_is_in_recovery() THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0) ELSE `+currentTimeline+` END,
			current_setting('synchronous_standby_names'), current_setting('primary_conninfo')`,
			&a.writable, &a.timeline, &a.sync, &conninfo)
		if err != nil {
			continue
		}
		for _, kv := range strings.Fields(conninfo) {
			if v, ok := strings.CutPrefix(kv, "host="); ok {
				a.upstream = strings.Trim(v, "'")
			}
		}
		answers[n] = a
	}
	var master *Node
	for _, n := range c.all() {
		if a, ok := answers[n]; ok && a.writable && (master == nil || a.timeline > answers[master].timeline) {
			master = n
		}
	}
	if master == nil {
		votes := map[string]int{}
		for _, a := range answers {
			if a.upstream != "" {
				votes[a.upstream]++
			}
		}
		best := 0
		for _, n := range c.all() {
			if votes[n.name] > best {
				master, best = n, votes[n.name]
			}
		}
		return master, nil
	}
	var names []string
	if m := syncNamesPattern.FindStringSubmatch(answers[master].sync); m != nil {
		for _, name := range strings.Split(m[1], ",") {
			name = strings.Trim(strings.TrimSpace(name), `"`)
			if name != "" && c.node(name) != nil && !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	return master, names
}

// attachedCompose reports whether c is a compose project it attached to.
func (c *Cluster) attachedCompose() bool {
	nodes := c.all()
	if len(nodes) == 0 {
		return false
	}
	n, ok := nodes[0].drv.(*composeNode)
	return ok && n.p.attached
}
