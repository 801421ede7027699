package testcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pgxha/pgxha/testcluster/internal/faultproxy"
)

// localNode runs one PostgreSQL server as a child process of this program,
// behind its own fault proxy.
type localNode struct {
	c       *Cluster
	name    string
	dataDir string
	sockDir string
	logPath string
	port    atomic.Int32 // the server's own port; clients use the proxy's
	proxy   *faultproxy.Proxy
	// With Options.PgBouncer: the PgBouncer between proxy and server, and
	// the proxy replicas stream through (faults act on both proxies).
	bouncer *bouncer
	repl    *faultproxy.Proxy

	mu      sync.Mutex // guards the fields below; held across start and stop
	aliases []*faultproxy.Proxy
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd has been waited for
	paused  atomic.Bool   // read without mu by faultState
}

var _ nodeDriver = (*localNode)(nil)

func (l *localNode) addr() string { return l.proxy.Addr() }
func (l *localNode) directAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(l.port.Load())))
}

// running reports whether the postmaster process is alive (paused counts).
// Caller must hold mu.
func (l *localNode) runningLocked() bool {
	if l.cmd == nil {
		return false
	}
	select {
	case <-l.exited:
		return false
	default:
		return true
	}
}

func (l *localNode) running() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.runningLocked()
}

func (l *localNode) start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.runningLocked() {
		return errors.New("already running")
	}
	// The server's own port was free when picked; if another program took
	// it meanwhile, pick another (clients reach the proxy, whose address
	// does not change).
	for attempt := 0; ; attempt++ {
		err := l.startLocked(ctx)
		if err == nil || attempt == 2 || !strings.Contains(err.Error(), "could not bind") {
			return err
		}
		port, perr := freePort()
		if perr != nil {
			return err
		}
		l.port.Store(int32(port))
		if l.bouncer != nil {
			l.repl.SetUpstream(l.directAddr())
			if err := l.bouncer.retarget(l.c, port); err != nil {
				return err
			}
			continue
		}
		l.proxy.SetUpstream(l.directAddr())
	}
}

// refuse makes the proxies refuse new connections (and reset the clients'),
// as a host whose server is down would. With a PgBouncer in front, clients
// keep reaching it: only the replication proxy refuses.
func (l *localNode) refuse(refuse bool) {
	if l.bouncer != nil {
		l.repl.Refuse(refuse)
		return
	}
	l.proxy.Refuse(refuse)
}

// proxies are the node's fault proxies: the clients' and, with PgBouncer,
// the replicas'.
func (l *localNode) proxies() []*faultproxy.Proxy {
	if l.repl != nil {
		return []*faultproxy.Proxy{l.proxy, l.repl}
	}
	return []*faultproxy.Proxy{l.proxy}
}

// startLocked starts the server once. Caller must hold mu.
func (l *localNode) startLocked(ctx context.Context) error {
	logFile, err := os.OpenFile(l.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(l.c.binDir, "postgres"),
		"-D", l.dataDir,
		"-c", "port="+strconv.Itoa(int(l.port.Load())),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+l.sockDir,
		"-c", "cluster_name="+l.name,
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = serverEnv(nil)
	cmd.SysProcAttr = sysProcAttr(l.c.cred, true)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		// Owned by the node: ends when the server process exits, which
		// stop, kill and Cluster.Stop all wait for.
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	l.cmd, l.exited = cmd, exited
	l.paused.Store(false)

	if err := l.waitAccepting(ctx, exited); err != nil {
		children := killTree(cmd.Process.Pid)
		<-exited
		reap(children, 5*time.Second)
		removeShmem(l.dataDir, l.c.cred)
		return err
	}
	if l.bouncer != nil && l.bouncer.proc == nil {
		if err := l.startBouncerLocked(ctx); err != nil {
			return fmt.Errorf("%s: %w", l.name, err)
		}
	}
	l.refuse(false)
	if l.bouncer != nil {
		l.proxy.Refuse(false)
	}
	return nil
}

// startBouncerLocked starts the node's PgBouncer; when another program
// holds its port, it moves to another and points the node's proxies there.
// Caller must hold mu.
func (l *localNode) startBouncerLocked(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		err := l.bouncer.start(ctx, l.c, int(l.port.Load()))
		if err == nil || attempt == 2 || !errors.Is(err, errPortTaken) {
			return err
		}
		port, perr := freePort()
		if perr != nil {
			return err
		}
		l.bouncer.port = port
		l.proxy.SetUpstream(l.bouncer.addr())
		for _, a := range l.aliases {
			a.SetUpstream(l.bouncer.addr())
		}
	}
}

// waitAccepting returns once the server accepts an authenticated
// connection, or fails when the process exits or ctx ends.
func (l *localNode) waitAccepting(ctx context.Context, exited chan struct{}) error {
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := l.c.connect(attemptCtx, l.directAddr())
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("postgres exited during start-up; log tail:\n%s", tailFile(l.logPath, 20))
		case <-ctx.Done():
			return fmt.Errorf("waiting for postgres to accept connections: %w (last error: %v)", ctx.Err(), err)
		case <-ticker.C:
		}
	}
}

func (l *localNode) stop() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.shutdownLocked(syscall.SIGINT, 60*time.Second)
}

// shutdownLocked sends sig (SIGINT: fast shutdown; SIGQUIT: immediate) and
// waits up to timeout, then kills. Caller must hold mu.
func (l *localNode) shutdownLocked(sig syscall.Signal, timeout time.Duration) error {
	if !l.runningLocked() {
		l.refuse(true)
		return nil
	}
	pid := l.cmd.Process.Pid
	if l.paused.Load() {
		_ = continueTree(pid)
		l.paused.Store(false)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal postmaster: %w", err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var err error
	select {
	case <-l.exited:
	case <-timer.C:
		err = fmt.Errorf("postgres did not shut down within %s; killed it", timeout)
		children := killTree(pid)
		<-l.exited
		reap(children, 5*time.Second)
		removeShmem(l.dataDir, l.c.cred)
	}
	l.refuse(true)
	return err
}

func (l *localNode) teardown() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.shutdownLocked(syscall.SIGQUIT, 10*time.Second)
}

func (l *localNode) kill() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.runningLocked() {
		return errors.New("not running")
	}
	// Reset the clients first, as a crashed host's kernel would, then kill
	// the whole tree: the postmaster frozen so it cannot restart children.
	// (With PgBouncer in front, PgBouncer sees its server connections
	// reset; its clients stay connected to it.)
	l.refuse(true)
	children := killTree(l.cmd.Process.Pid)
	<-l.exited
	reap(children, 5*time.Second)
	// A killed postmaster leaves its System V segment behind.
	removeShmem(l.dataDir, l.c.cred)
	l.paused.Store(false)
	return nil
}

func (l *localNode) pause() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.runningLocked() {
		return errors.New("not running")
	}
	if l.paused.Load() {
		return nil
	}
	if _, err := stopTree(l.cmd.Process.Pid); err != nil {
		return err
	}
	l.paused.Store(true)
	return nil
}

func (l *localNode) resume() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.runningLocked() {
		return errors.New("not running")
	}
	if !l.paused.Load() {
		return nil
	}
	if err := continueTree(l.cmd.Process.Pid); err != nil {
		return err
	}
	l.paused.Store(false)
	return nil
}

func (l *localNode) faultState() Faults {
	return Faults{Paused: l.paused.Load(), Partitioned: l.proxy.Partitioned(), Latency: l.proxy.Latency()}
}

func (l *localNode) partition() error {
	for _, p := range l.proxies() {
		p.Partition()
	}
	return nil
}

func (l *localNode) heal() error {
	for _, p := range l.proxies() {
		p.Heal()
	}
	return nil
}

func (l *localNode) setLatency(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("negative latency %s", d)
	}
	for _, p := range l.proxies() {
		p.SetLatency(d)
	}
	return nil
}

// primaryConnInfo is the conninfo a replica named app streams from this node
// with: through this node's proxy, so a partition cuts replication too.
func (l *localNode) primaryConnInfo(app string) string {
	host, port, _ := net.SplitHostPort(l.proxies()[len(l.proxies())-1].Addr())
	return fmt.Sprintf("host=%s port=%s user=%s password=%s application_name=%s sslmode=disable connect_timeout=2",
		host, port, quoteConnValue(l.c.opts.User), quoteConnValue(l.c.opts.Password), app)
}

// makeStandby turns the (stopped) data directory into a standby of primary.
// postgresql.auto.conf is rewritten whole: whatever was copied from another
// node (synchronous_standby_names, an old primary_conninfo) goes.
func (l *localNode) makeStandby(primary *Node) error {
	auto := "# managed by testcluster\nprimary_conninfo = " + quoteConfValue(primary.drv.primaryConnInfo(l.name)) + "\n"
	if err := l.c.writeServerFile(filepath.Join(l.dataDir, "postgresql.auto.conf"), auto); err != nil {
		return err
	}
	return l.c.writeServerFile(filepath.Join(l.dataDir, "standby.signal"), "")
}

// rewind runs pg_rewind against source; the server must be stopped.
func (l *localNode) rewind(ctx context.Context, source *Node) error {
	if l.running() {
		return errors.New("pg_rewind needs the node stopped")
	}
	host, port, _ := net.SplitHostPort(source.drv.directAddr())
	src := fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable", host, port,
		quoteConnValue(l.c.opts.User), quoteConnValue(l.c.opts.Database))
	out, err := l.c.runServerProgram(ctx, "pg_rewind", []string{"PGPASSWORD=" + l.c.opts.Password},
		"--target-pgdata="+l.dataDir, "--source-server="+src)
	if err != nil {
		return fmt.Errorf("pg_rewind: %w\n%s", err, out)
	}
	l.c.opts.Logf("testcluster: pg_rewind of %s from %s:\n%s", l.name, source.name, strings.TrimSpace(out))
	return nil
}

// reclone replaces the (stopped) data directory with a base backup of
// source, for when pg_rewind cannot rewind it.
func (l *localNode) reclone(ctx context.Context, source *Node) error {
	if l.running() {
		return errors.New("a new copy needs the node stopped")
	}
	if err := os.RemoveAll(l.dataDir); err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(source.drv.directAddr())
	out, err := l.c.runServerProgram(ctx, "pg_basebackup", []string{"PGPASSWORD=" + l.c.opts.Password},
		"-D", l.dataDir, "-h", host, "-p", port, "-U", l.c.opts.User, "-X", "stream", "--checkpoint=fast", "--no-sync")
	if err != nil {
		return fmt.Errorf("pg_basebackup: %w\n%s", err, out)
	}
	return nil
}

func (l *localNode) logTail(n int) string { return tailFile(l.logPath, n) }

func (l *localNode) close() error {
	l.mu.Lock()
	aliases := l.aliases
	l.aliases = nil
	l.mu.Unlock()
	var errs []error
	if l.bouncer != nil {
		errs = append(errs, l.bouncer.stop())
	}
	for _, p := range l.proxies() {
		errs = append(errs, p.Close())
	}
	for _, a := range aliases {
		errs = append(errs, a.Close())
	}
	return errors.Join(errs...)
}

// alias opens one more proxy to the server.
func (l *localNode) alias() (string, error) { return l.aliasAt("127.0.0.1:0") }

func (l *localNode) aliasAt(listen string) (string, error) {
	l.mu.Lock()
	upstream := l.directAddr()
	if l.bouncer != nil {
		upstream = l.bouncer.addr()
	}
	l.mu.Unlock()
	p, err := faultproxy.New(listen, upstream)
	if err != nil {
		return "", err
	}
	l.mu.Lock()
	l.aliases = append(l.aliases, p)
	l.mu.Unlock()
	return p.Addr(), nil
}

// newLocalNode sets up node i: its ports, proxies (and PgBouncer) and
// socket directory. Nothing runs yet; on error nothing is left open.
func (c *Cluster) newLocalNode(i int) (l *localNode, err error) {
	name := "n" + strconv.Itoa(i+1)
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("testcluster: %w", err)
	}
	l = &localNode{
		c:       c,
		name:    name,
		dataDir: filepath.Join(c.dir, name),
		sockDir: filepath.Join(c.dir, name+".sock"),
		logPath: filepath.Join(c.dir, name+".log"),
	}
	l.port.Store(int32(port))
	defer func() {
		if err != nil {
			for _, p := range []*faultproxy.Proxy{l.proxy, l.repl} {
				if p != nil {
					p.Close()
				}
			}
		}
	}()
	upstream := l.directAddr()
	if c.opts.PgBouncer != PgBouncerNone {
		l.bouncer = &bouncer{mode: c.opts.PgBouncer, dir: filepath.Join(c.dir, name+".pgbouncer")}
		l.bouncer.logPath = filepath.Join(l.bouncer.dir, "pgbouncer.log")
		if l.bouncer.port, err = freePort(); err != nil {
			return nil, fmt.Errorf("testcluster: %w", err)
		}
		if err := os.Mkdir(l.bouncer.dir, 0o700); err != nil {
			return nil, fmt.Errorf("testcluster: %w", err)
		}
		if err := chownTree(l.bouncer.dir, c.cred); err != nil {
			return nil, fmt.Errorf("testcluster: %w", err)
		}
		upstream = l.bouncer.addr()
		if l.repl, err = faultproxy.New("127.0.0.1:0", l.directAddr()); err != nil {
			return nil, fmt.Errorf("testcluster: replication proxy for %s: %w", name, err)
		}
		l.repl.Refuse(true)
	}
	if l.proxy, err = faultproxy.New("127.0.0.1:0", upstream); err != nil {
		return nil, fmt.Errorf("testcluster: proxy for %s: %w", name, err)
	}
	l.proxy.Refuse(true) // down until the server accepts connections
	if err := os.Mkdir(l.sockDir, 0o700); err != nil {
		return nil, fmt.Errorf("testcluster: %w", err)
	}
	if err := chownTree(l.sockDir, c.cred); err != nil {
		return nil, fmt.Errorf("testcluster: %w", err)
	}
	return l, nil
}

// startLocal sets up and starts every node as a local process.
func (c *Cluster) startLocal(ctx context.Context) error {
	var err error
	if c.binDir = c.opts.BinDir; c.binDir == "" {
		if c.binDir, err = FindBinDir(); err != nil {
			return err
		}
	} else if !hasServerPrograms(c.binDir) {
		return fmt.Errorf("testcluster: BinDir %s does not hold %s", c.binDir, strings.Join(serverPrograms, ", "))
	}
	if c.cred, err = serverCredential(); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	becomeSubreaper()
	if err := c.makeDir(); err != nil {
		return err
	}
	if err := chownTree(c.dir, c.cred); err != nil {
		return fmt.Errorf("testcluster: chown %s: %w", c.dir, err)
	}

	count := 1 + c.opts.Replicas
	for i := 0; i < count; i++ {
		l, err := c.newLocalNode(i)
		if err != nil {
			return err
		}
		c.nodes = append(c.nodes, &Node{c: c, name: l.name, index: i, drv: l})
	}

	// One initdb; the replicas are cold copies of the never-started master,
	// which is a valid base backup and much faster than pg_basebackup.
	master := c.nodes[0].drv.(*localNode)
	pwfile := filepath.Join(c.dir, "pwfile")
	if err := c.writeServerFile(pwfile, c.opts.Password+"\n"); err != nil {
		return err
	}
	out, err := c.runServerProgram(ctx, "initdb", nil,
		"-D", master.dataDir, "-U", c.opts.User, "--pwfile="+pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	os.Remove(pwfile)
	if err != nil {
		return fmt.Errorf("testcluster: initdb: %w\n%s", err, out)
	}
	if err := c.writeServerTLS(); err != nil {
		return err
	}
	hba := hbaConf
	if len(c.opts.HBA) > 0 {
		hba = "# from Options.HBA\n" + strings.Join(c.opts.HBA, "\n") + "\n" + hbaConf
	}
	if err := c.writeServerFile(filepath.Join(master.dataDir, "pg_hba.conf"), hba); err != nil {
		return err
	}
	if err := c.appendServerFile(filepath.Join(master.dataDir, "postgresql.conf"), c.serverConf()); err != nil {
		return err
	}
	for _, n := range c.nodes[1:] {
		l := n.drv.(*localNode)
		if out, err := c.runServerProgram(ctx, "cp", nil, "-a", master.dataDir, l.dataDir); err != nil {
			return fmt.Errorf("testcluster: copy data directory for %s: %w\n%s", n.name, err, out)
		}
		if err := l.makeStandby(c.nodes[0]); err != nil {
			return fmt.Errorf("testcluster: %s: %w", n.name, err)
		}
	}

	if err := c.nodes[0].drv.start(ctx); err != nil {
		return fmt.Errorf("testcluster: start %s: %w", c.nodes[0].name, err)
	}
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.drv.start(ctx); err != nil {
				errs[i] = fmt.Errorf("testcluster: start %s: %w", n.name, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := c.distinctStarts(ctx); err != nil {
		return err
	}
	c.master = c.nodes[0]
	var replicas []string
	for _, n := range c.nodes[1:] {
		replicas = append(replicas, n.name)
	}
	if err := c.waitStreaming(ctx, c.master, replicas, nil); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	if err := c.setSync(ctx, c.master, replicas[:c.opts.SyncReplicas]); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	return nil
}

// hbaConf: trust on the local socket (the harness's own use), passwords over
// TCP, so clients and replicas authenticate as they would in production.
const hbaConf = `# managed by testcluster
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
host    replication  all   ::1/128       scram-sha-256
`

// serverConf is appended to every node's postgresql.conf. Settings that
// differ per node (port, cluster_name, sockets) are given on the command
// line, so pg_rewind copying configuration files between nodes is harmless.
func (c *Cluster) serverConf() string {
	settings := map[string]string{
		"wal_level":                    "replica",
		"max_wal_senders":              "20",
		"max_replication_slots":        "20",
		"wal_keep_size":                "'512MB'",
		"hot_standby":                  "on",
		"hot_standby_feedback":         "on",
		"wal_log_hints":                "on",
		"synchronous_commit":           "on",
		"fsync":                        "off",
		"full_page_writes":             "on",
		"shared_buffers":               "'32MB'",
		"max_connections":              "200",
		"wal_receiver_status_interval": "'1s'",
		"wal_retrieve_retry_interval":  "'100ms'",
		"wal_sender_timeout":           "'10s'",
		"wal_receiver_timeout":         "'10s'",
		"log_line_prefix":              "'%m [%p] %q%a '",
		"log_connections":              "off",
		"password_encryption":          "'scram-sha-256'",
		"jit":                          "off",
		// Dynamic shared memory in the data directory, not /dev/shm, so a
		// killed server leaves nothing outside it.
		"dynamic_shared_memory_type": "mmap",
		"recovery_target_timeline":   "'latest'",
	}
	if c.opts.ServerTLS != nil {
		settings["ssl"] = "on"
		settings["ssl_cert_file"] = quoteConfValue(filepath.Join(c.dir, "tls", "server.crt"))
		settings["ssl_key_file"] = quoteConfValue(filepath.Join(c.dir, "tls", "server.key"))
		if len(c.opts.ServerTLS.ClientCAPEM) > 0 {
			settings["ssl_ca_file"] = quoteConfValue(filepath.Join(c.dir, "tls", "ca.crt"))
		}
	}
	for k, v := range c.opts.Settings {
		settings[k] = quoteConfValue(v)
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("\n# testcluster\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, settings[k])
	}
	return b.String()
}

// runServerProgram runs a PostgreSQL program (or cp) as the server's user.
func (c *Cluster) runServerProgram(ctx context.Context, program string, env []string, args ...string) (string, error) {
	path := program
	if program != "cp" {
		path = filepath.Join(c.binDir, program)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.Env = serverEnv(env)
	cmd.SysProcAttr = sysProcAttr(c.cred, false)
	cmd.Dir = c.dir
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.String(), err
}

// writeServerTLS writes Options.ServerTLS's files, which serverConf names,
// into the cluster's directory, owned by the server's user.
func (c *Cluster) writeServerTLS() error {
	t := c.opts.ServerTLS
	if t == nil {
		return nil
	}
	dir := filepath.Join(c.dir, "tls")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	if err := chownTree(dir, c.cred); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	files := map[string][]byte{"server.crt": t.CertPEM, "server.key": t.KeyPEM}
	if len(t.ClientCAPEM) > 0 {
		files["ca.crt"] = t.ClientCAPEM
	}
	for name, b := range files {
		if err := c.writeServerFile(filepath.Join(dir, name), string(b)); err != nil {
			return err
		}
	}
	return nil
}

// writeServerFile writes a file the server's user owns.
func (c *Cluster) writeServerFile(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	if err := chownTree(path, c.cred); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	return nil
}

func (c *Cluster) appendServerFile(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return fmt.Errorf("testcluster: %w", err)
	}
	return f.Close()
}

// serverEnv is a small, predictable environment for server programs.
func serverEnv(extra []string) []string {
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", "LANG=C", "TZ=UTC"}
	return append(env, extra...)
}

// handedOut holds the ports freePort returned in this process: a port is
// only bound once its server or PgBouncer starts, so until then a second
// call could return it again (two nodes of one cluster set up before either
// starts), and a PgBouncer that cannot bind it is not told apart from the
// one that did by a dial alone.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

func freePort() (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil || len(handedOut.ports) > 6000 {
		// Half the range: the oldest clusters of a long run are gone.
		handedOut.ports = make(map[int]bool)
	}
	// Below Linux's ephemeral range (32768 and up by default): a port the
	// kernel handed out for listening is free now, but an outgoing
	// connection (the suite makes thousands) can take it before the server
	// that is to listen there starts.
	for range 64 {
		port := 20000 + rand.IntN(12000)
		if handedOut.ports[port] {
			continue
		}
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			l.Close()
			handedOut.ports[port] = true
			return port, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// quoteConnValue quotes a libpq conninfo value.
func quoteConnValue(s string) string {
	if s != "" && !strings.ContainsAny(s, " '\\") {
		return s
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// quoteConfValue quotes a postgresql.conf value.
func quoteConfValue(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// tailFile returns the last n lines of a file.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startGap is how far apart the servers of a cluster start, at least
// (see distinctStarts).
const startGap = time.Millisecond

// distinctStarts restarts a replica that started within startGap of
// another server of the cluster: the replicas start together, and two
// servers whose postmasters started in the same microsecond look like one
// to a client that tells servers apart by their start time (pgxha's pools
// do, when a node's host name moves). On hosts of their own that is as
// good as never; here it would happen now and then.
func (c *Cluster) distinctStarts(ctx context.Context) error {
	for range 3 {
		starts := make([]int64, len(c.nodes))
		for i, n := range c.nodes {
			conn, err := c.connect(ctx, n.drv.directAddr())
			if err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
			err = conn.QueryRow(ctx, "SELECT (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::int8").Scan(&starts[i])
			conn.Close(ctx)
			if err != nil {
				return fmt.Errorf("%s: start time: %w", n.name, err)
			}
		}
		again := -1
		for i := 1; i < len(starts) && again < 0; i++ {
			for j := range i {
				if d := starts[i] - starts[j]; d > -int64(startGap/time.Microsecond) && d < int64(startGap/time.Microsecond) {
					again = i // never the master: i > j >= 0
					break
				}
			}
		}
		if again < 0 {
			return nil
		}
		n := c.nodes[again]
		if err := n.drv.stop(); err != nil {
			return fmt.Errorf("restart %s, started within %s of another server: %w", n.name, startGap, err)
		}
		if err := n.drv.start(ctx); err != nil {
			return fmt.Errorf("restart %s, started within %s of another server: %w", n.name, startGap, err)
		}
	}
	return fmt.Errorf("the servers kept starting within %s of one another", startGap)
}
