package testcluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The compose backend runs the services of docker-compose.replication.yml
// (n1 master, n2 synchronous replica, n3 asynchronous replica; fewer or other
// synchronous ones as Options ask) as one compose project per cluster, through the
// installed compose tool (`docker compose`, else `docker-compose`). Each
// cluster has its own project name, published ports and private network, so
// clusters do not collide and Stop removes exactly what the cluster made.
//
// Chaos operations map onto compose and the container's network namespace:
// Kill is `compose kill`, Stop/Start are `compose stop`/`compose start`,
// Pause/Resume are `compose pause`/`compose unpause`. Partition and SetLatency
// run testcluster/compose/faults.sh in the container (iptables and tc, with
// NET_ADMIN), or from this host through nsenter when the image has neither.
// Rewind and makeStandby run node.sh in a one-off container of the service
// (`compose run`), which mounts the stopped node's volume.

func init() { backends[BackendCompose] = (*Cluster).startCompose }

const (
	composeFileName   = "docker-compose.replication.yml"
	composeLocalImage = "pgxha/postgres:15-debian" // the file's default for PGXHA_PG_IMAGE
	composeServerPort = 5432
	// composeDirectPort is redirected to the server's port while the node is
	// partitioned, and exempt from the partition (see faults.sh).
	composeDirectPort = 5433
	composeLabel      = "com.docker.compose.project"
)

// composeServices are the file's services, in node order.
var composeServices = []string{"n1", "n2", "n3"}

// ComposeProject is the compose project name of a cluster started with
// BackendCompose ("" for other backends): its containers, network and
// volumes carry the label com.docker.compose.project with this value.
func (c *Cluster) ComposeProject() string {
	nodes := c.all()
	if len(nodes) == 0 {
		return ""
	}
	if n, ok := nodes[0].drv.(*composeNode); ok {
		return n.p.name
	}
	return ""
}

// composeProject is one cluster's compose project.
type composeProject struct {
	c *Cluster

	// Read-only once the project is up.
	tool    []string // "docker", "compose" or "docker-compose"
	file    string   // docker-compose.replication.yml
	scripts string   // testcluster/compose on this machine
	name    string
	env     []string // the environment of every compose command
	// attached: the project was running before (Options.ComposeProject),
	// and Stop leaves it running.
	attached bool

	downOnce sync.Once
}

// compose runs the compose tool on the project.
func (p *composeProject) compose(ctx context.Context, args ...string) (string, error) {
	full := append(slices.Clone(p.tool[1:]), "-f", p.file, "-p", p.name)
	return runCommand(ctx, p.env, p.tool[0], append(full, args...)...)
}

// down removes the project: containers (one-off ones too), network and
// volumes. The first caller does it and gets its error; the others wait
// for it and get nil. An attached project is left running.
func (p *composeProject) down() (err error) {
	if p.attached {
		return nil
	}
	p.downOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if _, downErr := p.compose(ctx, "down", "-v", "--remove-orphans", "-t", "0"); downErr != nil {
			p.c.opts.Logf("testcluster: compose down: %v", downErr)
		}
		// Whatever compose left behind (an interrupted one-off container,
		// a project half made by a failed up) goes by its label; what
		// cannot be removed is the error.
		err = removeComposeProject(ctx, p.name)
	})
	return err
}

// composeNode is one service of the project.
type composeNode struct {
	p    *composeProject
	name string // the service, its host name and its cluster_name

	// Read-only once the project is up.
	port       int // published container port 5432: what clients use
	directPort int // published container port 5433: past a partition

	opMu sync.Mutex // serializes operations; held across each

	mu        sync.Mutex // guards the fields below; never held across a command
	container string
	faults    composeFaults // in force (or to be set when the container starts)
}

var _ nodeDriver = (*composeNode)(nil)

func (n *composeNode) addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port))
}

// directAddr is the published port, or while the node is partitioned the
// direct port, which the partition lets through.
func (n *composeNode) directAddr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.faults.partitioned {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.directPort))
	}
	return n.addr()
}

func (n *composeNode) networkAddr() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := runCommand(ctx, nil, "docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", n.containerID())
	if err != nil {
		return "", err
	}
	ips := strings.Fields(out)
	if len(ips) == 0 {
		return "", fmt.Errorf("container of %s has no network address", n.name)
	}
	return net.JoinHostPort(ips[0], "5432"), nil
}

func (n *composeNode) containerID() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.container
}

// state returns the container's state: "running", "paused", "exited", ...
func (n *composeNode) state(ctx context.Context) (string, error) {
	id := n.containerID()
	if id == "" {
		return "", errors.New("no container")
	}
	out, err := runCommand(ctx, nil, "docker", "inspect", "-f", "{{.State.Status}}", id)
	return strings.TrimSpace(out), err
}

// running reports whether the container runs (paused counts).
func (n *composeNode) running() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := n.state(ctx)
	return err == nil && (st == "running" || st == "paused")
}

func (n *composeNode) start(ctx context.Context) error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if n.running() {
		return errors.New("already running")
	}
	if _, err := n.p.compose(ctx, "start", n.name); err != nil {
		return err
	}
	if err := n.waitAccepting(ctx); err != nil {
		return err
	}
	// A started container has a fresh network namespace: faults set before
	// are set again.
	n.mu.Lock()
	f := n.faults
	n.mu.Unlock()
	if !f.any() {
		return nil
	}
	return n.applyFaults(ctx, f)
}

// waitAccepting returns once the server accepts an authenticated
// connection through its published port, or fails when the container exits
// or ctx ends.
func (n *composeNode) waitAccepting(ctx context.Context) error {
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	lastCheck := time.Now()
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := n.p.c.connect(attemptCtx, n.addr())
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		if time.Since(lastCheck) > time.Second {
			lastCheck = time.Now()
			if st, stErr := n.state(ctx); stErr == nil && st != "running" {
				return fmt.Errorf("container is %s; log tail:\n%s", st, n.logTail(20))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for postgres to accept connections: %w (last error: %v)", ctx.Err(), err)
		case <-ticker.C:
		}
	}
}

func (n *composeNode) stop() error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if !n.running() {
		return nil
	}
	if err := n.unpauseLocked(ctx); err != nil {
		return err
	}
	_, err := n.p.compose(ctx, "stop", "-t", "60", n.name)
	return err
}

func (n *composeNode) kill() error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !n.running() {
		return errors.New("not running")
	}
	_, err := n.p.compose(ctx, "kill", "-s", "SIGKILL", n.name)
	return err
}

func (n *composeNode) pause() error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := n.state(ctx)
	switch {
	case err != nil:
		return err
	case st == "paused":
		return nil
	case st != "running":
		return errors.New("not running")
	}
	_, err = n.p.compose(ctx, "pause", n.name)
	return err
}

func (n *composeNode) resume() error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := n.state(ctx)
	switch {
	case err != nil:
		return err
	case st == "running":
		return nil
	case st != "paused":
		return errors.New("not running")
	}
	return n.unpauseLocked(ctx)
}

// unpauseLocked unpauses the container if it is paused. Caller must hold
// opMu.
func (n *composeNode) unpauseLocked(ctx context.Context) error {
	if st, err := n.state(ctx); err != nil || st != "paused" {
		return err
	}
	_, err := n.p.compose(ctx, "unpause", n.name)
	return err
}

// faults reports the network faults set and whether the container is
// paused (asked of the engine, within a few seconds).
func (n *composeNode) faultState() Faults {
	n.mu.Lock()
	f := n.faults
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, _ := n.state(ctx)
	return Faults{Paused: st == "paused", Partitioned: f.partitioned, Latency: f.latency}
}

func (n *composeNode) partition() error {
	return n.setFaults(func(f *composeFaults) { f.partitioned = true })
}

func (n *composeNode) heal() error {
	return n.setFaults(func(f *composeFaults) { f.partitioned = false })
}

func (n *composeNode) setLatency(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("negative latency %s", d)
	}
	return n.setFaults(func(f *composeFaults) { f.latency = d })
}

// composeFaults is a node's network fault state.
type composeFaults struct {
	partitioned bool
	latency     time.Duration
	// unknown: attached to a node whose state could not be read (it was
	// paused); every change is applied, undoing included.
	unknown bool
}

func (f composeFaults) any() bool { return f.partitioned || f.latency > 0 || f.unknown }

// composeFaultsFile is where a container keeps its fault state, so that a
// later attach (another process) knows it.
const composeFaultsFile = "/run/pgxha-faults"

// setFaults applies the fault state change makes and records it once it is
// in force, so directAddr never names the direct port before it works.
func (n *composeNode) setFaults(change func(*composeFaults)) error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n.mu.Lock()
	was := n.faults
	n.mu.Unlock()
	f := was
	f.unknown = false
	change(&f)
	if !was.any() && !f.any() {
		return nil // nothing set, nothing to undo
	}
	if err := n.applyFaults(ctx, f); err != nil {
		return err
	}
	n.recordFaults(ctx, f)
	n.mu.Lock()
	n.faults = f
	n.mu.Unlock()
	return nil
}

// errNoFaultTools is faults.sh's exit status when the namespace it runs in
// lacks iptables or tc.
const errNoFaultTools = 3

// applyFaults runs faults.sh with f: in the container when it has the
// tools, else from this host in the container's network namespace. A
// container that is not running gets them when it starts. Caller must hold
// opMu.
func (n *composeNode) applyFaults(ctx context.Context, f composeFaults) error {
	id := n.containerID()
	st, err := n.state(ctx)
	if err != nil {
		return err
	}
	if st != "running" && st != "paused" {
		return nil
	}
	part := "0"
	if f.partitioned {
		part = "1"
	}
	// The local backend's proxy delays each direction by d; netem delays
	// what the node sends, so by 2d for the same round trip.
	delayUS := strconv.FormatInt((2 * f.latency).Microseconds(), 10)
	var inside error
	if st == "running" {
		_, inside = runCommand(ctx, nil, "docker", "exec", "-u", "0", id, "sh", "/pgxha/faults.sh", part, delayUS)
		var exitErr *exec.ExitError
		if inside == nil || !errors.As(inside, &exitErr) || exitErr.ExitCode() != errNoFaultTools {
			return faultError(inside, f)
		}
	} else {
		inside = errors.New("the container is paused")
	}
	// The image lacks iptables or tc (the official postgres image), or the
	// container is paused: enter its network namespace from this host.
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w; changing its network from this host needs root (or an image with iptables and iproute2: make compose-image)", inside)
	}
	pid, err := runCommand(ctx, nil, "docker", "inspect", "-f", "{{.State.Pid}}", id)
	if err != nil {
		return err
	}
	_, err = runCommand(ctx, nil, "nsenter", "--net=/proc/"+strings.TrimSpace(pid)+"/ns/net",
		"sh", filepath.Join(n.p.scripts, "faults.sh"), part, delayUS)
	if err != nil {
		err = fmt.Errorf("%w (in the container: %v)", err, inside)
	}
	return faultError(err, f)
}

// recordFaults writes f into the container (composeFaultsFile), when it
// runs, for readFaults. A failure only costs a later attach its knowledge.
func (n *composeNode) recordFaults(ctx context.Context, f composeFaults) {
	part := "0"
	if f.partitioned {
		part = "1"
	}
	line := part + " " + strconv.FormatInt(f.latency.Microseconds(), 10)
	_, _ = runCommand(ctx, nil, "docker", "exec", "-u", "0", n.containerID(), "sh", "-c", "echo "+line+" > "+composeFaultsFile)
}

// readFaults reads what recordFaults wrote; a container it cannot ask
// (paused, stopped) gives an unknown state.
func (n *composeNode) readFaults(ctx context.Context) composeFaults {
	out, err := runCommand(ctx, nil, "docker", "exec", n.containerID(), "cat", composeFaultsFile)
	if err != nil {
		if strings.Contains(out, "No such file") {
			return composeFaults{} // never set
		}
		return composeFaults{unknown: true}
	}
	var part int
	var delayUS int64
	if _, err := fmt.Sscan(out, &part, &delayUS); err != nil {
		return composeFaults{unknown: true}
	}
	return composeFaults{partitioned: part == 1, latency: time.Duration(delayUS) * time.Microsecond}
}

// faultError explains a failure to set latency on a kernel without netem.
func faultError(err error, f composeFaults) error {
	if err != nil && f.latency > 0 && (strings.Contains(err.Error(), "netem") || strings.Contains(err.Error(), "qdisc kind is unknown")) {
		return fmt.Errorf("SetLatency is not supported by the compose backend on this machine: "+
			"it needs the kernel's netem queueing discipline (sch_netem): %w", err)
	}
	return err
}

// primaryConnInfo is the conninfo a replica named app streams from this node
// with: its host name and port on the project's network.
func (n *composeNode) primaryConnInfo(app string) string {
	o := n.p.c.opts
	return fmt.Sprintf("host=%s port=%d user=%s password=%s application_name=%s sslmode=disable connect_timeout=2",
		n.name, composeServerPort, quoteConnValue(o.User), quoteConnValue(o.Password), app)
}

// makeStandby makes the (stopped) node a standby of primary, in a one-off
// container that mounts its volume.
func (n *composeNode) makeStandby(primary *Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return n.runOneOff(ctx, "standby", n.name, primary.name)
}

// rewind runs pg_rewind from source in a one-off container that mounts the
// (stopped) node's volume.
func (n *composeNode) rewind(ctx context.Context, source *Node) error {
	return n.runOneOff(ctx, "rewind", source.name)
}

// runOneOff runs node.sh with args in a one-off container of the (stopped)
// node's service: the same image, volume and network, no published port.
// docker exec cannot do it: the server is the container's main process.
func (n *composeNode) runOneOff(ctx context.Context, args ...string) error {
	if n.running() {
		return fmt.Errorf("node.sh %s needs the node stopped", args[0])
	}
	out, err := n.p.compose(ctx, append([]string{"run", "--rm", "--no-deps", "-T", n.name}, args...)...)
	if err != nil {
		return fmt.Errorf("node.sh %s: %w", args[0], err)
	}
	n.p.c.opts.Logf("testcluster: node.sh %s on %s:\n%s", strings.Join(args, " "), n.name, strings.TrimSpace(out))
	return nil
}

func (n *composeNode) logTail(lines int) string {
	id := n.containerID()
	if id == "" {
		return "(no container)"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := runCommand(ctx, nil, "docker", "logs", "--tail", strconv.Itoa(lines), id)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return strings.TrimRight(out, "\n")
}

// teardown removes the whole project (once, for every node).
func (n *composeNode) teardown() error { return n.p.down() }

func (n *composeNode) close() error { return nil }

// startCompose brings up docker-compose.replication.yml, or its first
// 1+Replicas services, as a new project, and returns once every replica
// streams and the first SyncReplicas show sync.
func (c *Cluster) startCompose(ctx context.Context) error {
	if c.opts.Replicas > len(composeServices)-1 {
		return fmt.Errorf("testcluster: the compose backend runs the nodes of %s, a master and at most %d replicas: got Replicas %d",
			composeFileName, len(composeServices)-1, c.opts.Replicas)
	}
	if len(c.opts.Settings) > 0 {
		return fmt.Errorf("testcluster: the compose backend does not take Options.Settings: the servers' settings are those of testcluster/compose/node.sh")
	}
	if c.opts.ComposeProject != "" {
		return c.attachCompose(ctx)
	}
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
	reapComposeProjects()

	c.dir, err = os.MkdirTemp(c.opts.Dir, "pgxha-compose-")
	if err != nil {
		return fmt.Errorf("testcluster: temp dir: %w", err)
	}
	p := &composeProject{
		c:       c,
		tool:    tool,
		file:    file,
		scripts: filepath.Join(filepath.Dir(file), "testcluster", "compose"),
		name:    composeProjectName(),
	}
	// The nodes exist before anything runs, so Stop removes whatever a
	// failed start left.
	services := composeServices[:1+c.opts.Replicas]
	for i, name := range services {
		c.nodes = append(c.nodes, &Node{c: c, name: name, index: i, drv: &composeNode{p: p, name: name}})
	}
	image := composeImage()
	c.opts.Logf("testcluster: compose project %s (%s, image %s)", p.name, strings.Join(tool, " "), image)

	for attempt := 1; ; attempt++ {
		if err := p.configure(); err != nil {
			return err
		}
		out, err := p.compose(ctx, append([]string{"up", "-d"}, services...)...)
		if err == nil {
			break
		}
		if attempt < 3 && ctx.Err() == nil && addressTaken(out) {
			// Another cluster took a port or the subnet since we chose them.
			c.opts.Logf("testcluster: compose up: %s; trying other addresses", lastLine(out))
			downCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			_, _ = p.compose(downCtx, "down", "-v", "--remove-orphans", "-t", "0")
			cancel()
			continue
		}
		if _, inspectErr := runCommand(ctx, nil, "docker", "image", "inspect", image); inspectErr != nil {
			return fmt.Errorf("testcluster: compose up: image %s is not on this machine and could not be pulled "+
				"(`make compose-image` builds %s from Debian's packages; PGXHA_PG_IMAGE names another): %w", image, composeLocalImage, err)
		}
		return fmt.Errorf("testcluster: compose up: %w", err)
	}
	for _, node := range c.nodes {
		n := node.drv.(*composeNode)
		id, err := composeContainer(ctx, p.name, n.name)
		if err != nil {
			return fmt.Errorf("testcluster: %s: %w", n.name, err)
		}
		n.mu.Lock()
		n.container = id
		n.mu.Unlock()
	}
	if err := c.nodes[0].drv.(*composeNode).waitAccepting(ctx); err != nil {
		return fmt.Errorf("testcluster: %s: %w", c.nodes[0].name, err)
	}
	// The file's master names n2 in synchronous_standby_names; setSync
	// makes it what Options ask for (and is a no-op for the default layout).
	c.mu.Lock()
	c.master = c.nodes[0]
	c.mu.Unlock()
	replicas := services[1:]
	if err := c.waitStreaming(ctx, c.nodes[0], replicas, nil); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	if err := c.setSync(ctx, c.nodes[0], replicas[:c.opts.SyncReplicas]); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	return nil
}

// configure chooses the project's ports and network, given to compose in
// the file's variables.
func (p *composeProject) configure() error {
	subnet, err := freeSubnet()
	if err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	o := p.c.opts
	p.env = append(os.Environ(),
		"PGXHA_PG_IMAGE="+composeImage(),
		"PGXHA_NET="+subnet,
		"PGXHA_PG_USER="+o.User,
		"PGXHA_PG_PASSWORD="+o.Password,
		"PGXHA_PG_DATABASE="+o.Database,
	)
	for _, node := range p.c.nodes {
		n := node.drv.(*composeNode)
		if n.port, err = freePort(); err != nil {
			return fmt.Errorf("testcluster: %w", err)
		}
		if n.directPort, err = freePort(); err != nil {
			return fmt.Errorf("testcluster: %w", err)
		}
		up := strings.ToUpper(n.name)
		p.env = append(p.env, fmt.Sprintf("PGXHA_%s_PORT=%d", up, n.port), fmt.Sprintf("PGXHA_%s_DIRECT_PORT=%d", up, n.directPort))
	}
	return nil
}

// composeImage is the image of the compose cluster: PGXHA_PG_IMAGE, else
// the one `make compose-image` builds.
func composeImage() string {
	if image := os.Getenv("PGXHA_PG_IMAGE"); image != "" {
		return image
	}
	return composeLocalImage
}

// composeFile finds docker-compose.replication.yml: PGXHA_COMPOSE_FILE, else
// the repository root above this source file.
func composeFile() (string, error) {
	if f := os.Getenv("PGXHA_COMPOSE_FILE"); f != "" {
		abs, err := filepath.Abs(f)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			return "", fmt.Errorf("testcluster: PGXHA_COMPOSE_FILE: %w", err)
		}
		return abs, nil
	}
	_, src, _, ok := runtime.Caller(0)
	if ok {
		f := filepath.Join(filepath.Dir(src), "..", composeFileName)
		if _, err := os.Stat(f); err == nil {
			return filepath.Clean(f), nil
		}
	}
	return "", fmt.Errorf("testcluster: %s not found next to the testcluster sources; set PGXHA_COMPOSE_FILE", composeFileName)
}

var composeTool struct {
	once sync.Once
	argv []string
	err  error
}

// findComposeTool returns the compose command that works here: the
// `docker compose` plugin, else `docker-compose`. The answer is kept for
// the process.
func findComposeTool() ([]string, error) {
	composeTool.once.Do(func() {
		var errs []error
		for _, argv := range [][]string{{"docker", "compose"}, {"docker-compose"}} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := runCommand(ctx, nil, argv[0], append(argv[1:], "version")...)
			cancel()
			if err == nil {
				composeTool.argv = argv
				return
			}
			errs = append(errs, err)
		}
		composeTool.err = fmt.Errorf("testcluster: no compose tool: neither `docker compose` nor `docker-compose` works: %w", errors.Join(errs...))
	})
	return composeTool.argv, composeTool.err
}

// dockerAnswers checks that a Docker engine answers.
func dockerAnswers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := runCommand(ctx, nil, "docker", "version", "-f", "{{.Server.Version}}"); err != nil {
		return fmt.Errorf("testcluster: the compose backend needs a Docker engine, and none answers: %w", err)
	}
	return nil
}

// composeContainer returns the container of a project's service.
func composeContainer(ctx context.Context, project, service string) (string, error) {
	out, err := runCommand(ctx, nil, "docker", "ps", "-a", "-q", "--no-trunc",
		"--filter", "label="+composeLabel+"="+project,
		"--filter", "label=com.docker.compose.service="+service,
		"--filter", "label=com.docker.compose.oneoff=False")
	if err != nil {
		return "", err
	}
	ids := strings.Fields(out)
	if len(ids) != 1 {
		return "", fmt.Errorf("want one container of service %s in project %s, found %d", service, project, len(ids))
	}
	return ids[0], nil
}

// composeProjectName is unique per cluster and says which process made it,
// so reapComposeProjects can tell the leftovers of a dead process.
func composeProjectName() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("pgxha-test-%s-%d-%s", pidNamespace(), os.Getpid(), hex.EncodeToString(b[:]))
}

// pidNamespace identifies this process's PID namespace ("0" if unknown).
func pidNamespace() string {
	link, err := os.Readlink("/proc/self/ns/pid") // "pid:[4026531836]"
	if err != nil {
		return "0"
	}
	return strings.Trim(strings.TrimPrefix(link, "pid:"), "[]")
}

var reapOnce sync.Once

// reapComposeProjects removes, once per process, the projects of test
// processes of this PID namespace that died without stopping their clusters
// (a killed `go test`, a test binary that hit its -timeout).
func reapComposeProjects() {
	reapOnce.Do(func() {
		ns := pidNamespace()
		if ns == "0" {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		projects := map[string]bool{}
		for _, kind := range []string{"container", "network", "volume"} {
			args := []string{kind, "ls", "--filter", "label=" + composeLabel, "--format", `{{.Label "` + composeLabel + `"}}`}
			if kind == "container" {
				args = append(args, "-a")
			}
			out, err := runCommand(ctx, nil, "docker", args...)
			if err != nil {
				continue
			}
			for _, name := range strings.Fields(out) {
				projects[name] = true
			}
		}
		prefix := "pgxha-test-" + ns + "-"
		for name := range projects {
			rest, ok := strings.CutPrefix(name, prefix)
			if !ok {
				continue
			}
			pidText, _, _ := strings.Cut(rest, "-")
			pid, err := strconv.Atoi(pidText)
			if err != nil || pid == os.Getpid() || processAlive(pid) {
				continue
			}
			_ = removeComposeProject(ctx, name)
		}
	})
}

// removeComposeProject removes every container, network and volume labelled
// with the project, through the engine alone.
func removeComposeProject(ctx context.Context, project string) error {
	filter := "label=" + composeLabel + "=" + project
	var errs []error
	list := func(args ...string) []string {
		out, err := runCommand(ctx, nil, "docker", append(args, "--filter", filter, "-q")...)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		return strings.Fields(out)
	}
	if ids := list("ps", "-a"); len(ids) > 0 {
		if _, err := runCommand(ctx, nil, "docker", append([]string{"rm", "-f", "-v"}, ids...)...); err != nil {
			errs = append(errs, err)
		}
	}
	if ids := list("network", "ls"); len(ids) > 0 {
		if _, err := runCommand(ctx, nil, "docker", append([]string{"network", "rm"}, ids...)...); err != nil {
			errs = append(errs, err)
		}
	}
	if ids := list("volume", "ls"); len(ids) > 0 {
		if _, err := runCommand(ctx, nil, "docker", append([]string{"volume", "rm", "-f"}, ids...)...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// freeSubnet picks a /24 in 172.29.0.0/16, given as its first three octets,
// that no Docker network and no route of this host uses. compose up fails
// if another cluster takes it first, and startCompose then tries again.
func freeSubnet() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var used []*net.IPNet
	if ids, err := runCommand(ctx, nil, "docker", "network", "ls", "-q"); err == nil && strings.TrimSpace(ids) != "" {
		out, _ := runCommand(ctx, nil, "docker", append([]string{"network", "inspect", "-f",
			"{{range .IPAM.Config}}{{.Subnet}} {{end}}"}, strings.Fields(ids)...)...)
		for _, s := range strings.Fields(out) {
			if _, n, err := net.ParseCIDR(s); err == nil {
				used = append(used, n)
			}
		}
	}
	if ifaces, err := net.InterfaceAddrs(); err == nil {
		for _, a := range ifaces {
			if n, ok := a.(*net.IPNet); ok {
				used = append(used, n)
			}
		}
	}
	for range 64 {
		third, err := rand.Int(rand.Reader, big.NewInt(256))
		if err != nil {
			return "", err
		}
		prefix := fmt.Sprintf("172.29.%d", third.Int64())
		candidate := &net.IPNet{IP: net.ParseIP(prefix + ".0").To4(), Mask: net.CIDRMask(24, 32)}
		if !slices.ContainsFunc(used, func(u *net.IPNet) bool {
			return u.Contains(candidate.IP) || candidate.Contains(u.IP)
		}) {
			return prefix, nil
		}
	}
	return "", errors.New("no free /24 in 172.29.0.0/16 for the compose network")
}

// addressTaken tells a compose up that failed because a published port or
// the subnet was taken meanwhile.
func addressTaken(out string) bool {
	for _, s := range []string{"port is already allocated", "address already in use", "Pool overlaps", "overlaps with other one"} {
		if strings.Contains(out, s) {
			return true
		}
	}
	return false
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// runCommand runs a program and returns its combined output. env nil means
// this process's environment. The program dies with this process (on
// Linux), so a killed test leaves no compose command running on; what it
// had made is removed by reapComposeProjects. The error names the command
// and carries the output.
func runCommand(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.SysProcAttr = sysProcAttr(nil, true)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return out.String(), &commandError{cmd: name + " " + strings.Join(args, " "), out: strings.TrimSpace(out.String()), err: err}
	}
	return out.String(), nil
}

// commandError is a failed command with its output.
type commandError struct {
	cmd, out string
	err      error
}

func (e *commandError) Error() string {
	if e.out == "" {
		return fmt.Sprintf("%s: %v", e.cmd, e.err)
	}
	return fmt.Sprintf("%s: %v: %s", e.cmd, e.err, e.out)
}

func (e *commandError) Unwrap() error { return e.err }
