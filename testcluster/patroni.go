//go:build linux

package testcluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pgxha/pgxha/testcluster/internal/faultproxy"
)

func init() { backends[BackendPatroni] = (*Cluster).startPatroni }

// Patroni's timing, in seconds (its settings take whole seconds), as small
// as Patroni works with. Patroni requires loop_wait + 2*retry_timeout <= ttl.
// retry_timeout cannot be 1: to take the leader key, Patroni's etcd3 client
// renews its lease and then gives up unless at least a second of
// retry_timeout is left, so with 1 no replica could ever become the leader.
// A dead leader's key expires ttl seconds after its last renewal, which is
// most of a failover's time; the next loop (loop_wait) then promotes.
const (
	patroniTTL          = 5
	patroniLoopWait     = 1
	patroniRetryTimeout = 2
)

const (
	patroniScope     = "pgxha"
	patroniNamespace = "/testcluster/"
	replicationUser  = "replicator"
)

// patroniCluster is the Patroni backend's orchestrator: one etcd, and
// Patroni's view of the topology, which it keeps in etcd.
type patroniCluster struct {
	c *Cluster

	// Read-only after startPatroni.
	etcdBin    string
	patroniBin string
	python     string // the interpreter of patroniBin, which also runs the keeper
	keeperPath string
	etcdURL    string
	etcdPeer   string
	etcdDir    string
	etcdLog    string
	syncCount  int // synchronous_node_count; 0: no synchronous mode
	http       *http.Client

	remaining atomic.Int32 // nodes whose teardown has not run; the last one calls shutdown
	shutOnce  sync.Once

	mu         sync.Mutex // guards the fields below
	etcd       *exec.Cmd
	etcdExited chan struct{}
	stopFollow context.CancelFunc
	followDone chan struct{}
}

var _ orchestrator = (*patroniCluster)(nil)

// patroniNode is one PostgreSQL server managed by its own Patroni, behind a
// fault proxy. Patroni runs under a keeper (keeperScript), the subreaper of
// every process of the node.
type patroniNode struct {
	c       *Cluster
	pc      *patroniCluster
	name    string
	dataDir string
	sockDir string
	config  string // Patroni's configuration file
	logPath string // Patroni's log; PostgreSQL, which inherits its stderr, logs there too
	port    int    // the server's own port; clients and replicas use the proxy's
	apiPort int    // Patroni's REST API
	proxy   *faultproxy.Proxy

	mu     sync.Mutex // guards the fields below; held across start, stop and kill
	keeper *exec.Cmd
	exited chan struct{}  // closed once keeper has been waited for
	paused atomic.Bool    // read without mu by faultState
	tags   map[string]any // the operator's tags, over the defaults; see setTags
}

var _ nodeDriver = (*patroniNode)(nil)

// keeperScript runs Patroni (argv[1:]) and holds every process of a node
// under it. Patroni starts PostgreSQL through a launcher that exits at once,
// leaving the postmaster orphaned: as the subreaper, the keeper adopts and
// reaps it, so Patroni, which waits for a stopped postmaster to vanish,
// never waits for a zombie. The keeper exits once it has no child left. On
// SIGTERM (also its parent-death signal), or when its parent is gone, it
// kills every process under it.
const keeperScript = `import ctypes, os, signal, sys

PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
parent = os.getppid()
watched = {signal.SIGCHLD, signal.SIGTERM}
signal.pthread_sigmask(signal.SIG_BLOCK, watched)
if os.fork() == 0:
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.execv(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)


def descendants():
    children = {}
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/' + name + '/stat') as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(')') + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [os.getpid()]
    while todo:
        for pid in children.get(todo.pop(), ()):
            found.append(pid)
            todo.append(pid)
    return found


doomed = False
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass
    except ChildProcessError:
        sys.exit(0)
    if doomed or os.getppid() != parent:
        doomed = True
        for pid in descendants():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    info = signal.sigtimedwait(watched, 0.05 if doomed else 1.0)
    if info is not None and info.si_signo == signal.SIGTERM:
        doomed = True
`

// startPatroni starts etcd and one Patroni per node; node 0 bootstraps the
// cluster and is its first leader.
func (c *Cluster) startPatroni(ctx context.Context) error {
	pc := &patroniCluster{c: c, http: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
	if c.opts.SyncReplicas > 0 {
		pc.syncCount = c.opts.SyncReplicas
	}
	var err error
	for _, p := range []struct {
		dst  *string
		name string
	}{{&pc.patroniBin, "patroni"}, {&pc.etcdBin, "etcd"}} {
		if *p.dst, err = exec.LookPath(p.name); err != nil {
			return fmt.Errorf("testcluster: the Patroni backend needs patroni and etcd: %s not found in PATH; run `make deps` (scripts/ensure-patroni.sh installs Debian's patroni and etcd-server)", p.name)
		}
	}
	if pc.python, err = scriptInterpreter(pc.patroniBin); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
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
	pc.keeperPath = filepath.Join(c.dir, "patroni-keeper.py")
	if err := c.writeServerFile(pc.keeperPath, keeperScript); err != nil {
		return err
	}

	// The nodes first: from here on Stop tears down whatever runs.
	count := 1 + c.opts.Replicas
	for i := 0; i < count; i++ {
		n, err := pc.newNode(i)
		if err != nil {
			return err
		}
		c.nodes = append(c.nodes, &Node{c: c, name: n.name, index: i, drv: n})
	}
	pc.remaining.Store(int32(len(c.nodes)))

	if err := pc.startEtcd(ctx); err != nil {
		return err
	}
	for _, n := range c.nodes {
		if err := n.drv.(*patroniNode).writeConfig(); err != nil {
			return err
		}
	}

	first := c.nodes[0]
	if err := first.drv.start(ctx); err != nil {
		return fmt.Errorf("testcluster: start %s: %w", first.name, err)
	}
	if err := pc.waitLeader(ctx, first); err != nil {
		return fmt.Errorf("testcluster: %s did not become the leader: %w", first.name, err)
	}
	// Patroni keeps a synchronous standby while it streams, so the first
	// SyncReplicas replicas, started and made synchronous before the
	// others start, stay the synchronous ones.
	replicas := c.nodes[1:]
	k := c.opts.SyncReplicas
	var started []string
	for _, group := range [][]*Node{replicas[:k], replicas[k:]} {
		if len(group) == 0 {
			continue
		}
		if err := startNodes(ctx, group); err != nil {
			return err
		}
		for _, n := range group {
			started = append(started, n.name)
		}
		if _, err := pc.waitSettled(ctx, first, started); err != nil {
			return fmt.Errorf("testcluster: %w", err)
		}
	}
	st, err := pc.state(ctx)
	if err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	pc.record(st)
	pc.startFollowing()
	c.orchestrator = pc
	return nil
}

// startNodes starts nodes concurrently.
func startNodes(ctx context.Context, nodes []*Node) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.drv.start(ctx); err != nil {
				errs[i] = fmt.Errorf("testcluster: start %s: %w", n.name, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// scriptInterpreter returns the program named on the #! line of path.
func scriptInterpreter(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	line, ok := strings.CutPrefix(line, "#!")
	fields := strings.Fields(line)
	switch {
	case !ok || len(fields) == 0:
		return exec.LookPath("python3")
	case filepath.Base(fields[0]) == "env" && len(fields) > 1:
		return exec.LookPath(fields[1])
	default:
		return fields[0], nil
	}
}

// newNode sets up node i: ports, proxy and socket directory.
func (pc *patroniCluster) newNode(i int) (*patroniNode, error) {
	c := pc.c
	name := "n" + strconv.Itoa(i+1)
	n := &patroniNode{
		c:       c,
		pc:      pc,
		name:    name,
		dataDir: filepath.Join(c.dir, name),
		sockDir: filepath.Join(c.dir, name+".sock"),
		config:  filepath.Join(c.dir, name+".patroni.yml"),
		logPath: filepath.Join(c.dir, name+".log"),
	}
	var err error
	if n.port, err = freePort(); err != nil {
		return nil, fmt.Errorf("testcluster: %w", err)
	}
	if n.apiPort, err = freePort(); err != nil {
		return nil, fmt.Errorf("testcluster: %w", err)
	}
	if n.proxy, err = faultproxy.New("127.0.0.1:0", n.directAddr()); err != nil {
		return nil, fmt.Errorf("testcluster: proxy for %s: %w", name, err)
	}
	n.proxy.Refuse(true) // down until the server accepts connections
	if err := os.Mkdir(n.sockDir, 0o700); err != nil {
		n.proxy.Close()
		return nil, fmt.Errorf("testcluster: %w", err)
	}
	if err := chownTree(n.sockDir, c.cred); err != nil {
		n.proxy.Close()
		return nil, fmt.Errorf("testcluster: %w", err)
	}
	return n, nil
}

// writeConfig writes the node's Patroni configuration. JSON is YAML, so
// encoding/json writes it.
func (n *patroniNode) writeConfig() error {
	c, pc := n.c, n.pc
	api := net.JoinHostPort("127.0.0.1", strconv.Itoa(n.apiPort))
	var hba []string
	for _, line := range strings.Split(hbaConf, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			hba = append(hba, line)
		}
	}
	dcs := map[string]any{
		"ttl":                     patroniTTL,
		"loop_wait":               patroniLoopWait,
		"retry_timeout":           patroniRetryTimeout,
		"maximum_lag_on_failover": 1 << 20,
		"postgresql": map[string]any{
			"use_pg_rewind": true,
			"use_slots":     true,
			"parameters":    patroniParameters(c.serverConf()),
		},
	}
	if pc.syncCount > 0 {
		dcs["synchronous_mode"] = true
		dcs["synchronous_node_count"] = pc.syncCount
	}
	cfg := map[string]any{
		"scope":     patroniScope,
		"namespace": patroniNamespace,
		"name":      n.name,
		"log":       map[string]any{"level": "INFO"},
		"restapi":   map[string]any{"listen": api, "connect_address": api},
		"etcd3":     map[string]any{"host": strings.TrimPrefix(pc.etcdURL, "http://")},
		"bootstrap": map[string]any{
			"dcs": dcs,
			"initdb": []any{
				map[string]string{"encoding": "UTF8"},
				map[string]string{"locale": "C"},
				map[string]string{"auth-local": "trust"},
				map[string]string{"auth-host": "scram-sha-256"},
				"no-sync",
			},
		},
		"postgresql": map[string]any{
			"listen":          n.directAddr(),
			"connect_address": n.proxy.Addr(),
			"data_dir":        n.dataDir,
			"bin_dir":         c.binDir,
			"pgpass":          filepath.Join(c.dir, n.name+".pgpass"),
			"use_unix_socket": true,
			"authentication": map[string]any{
				"superuser":   map[string]string{"username": c.opts.User, "password": c.opts.Password},
				"replication": map[string]string{"username": replicationUser, "password": c.opts.Password},
			},
			"parameters":    map[string]string{"unix_socket_directories": n.sockDir},
			"pg_hba":        hba,
			"use_pg_rewind": true,
			"basebackup":    []any{map[string]string{"checkpoint": "fast"}},
			"remove_data_directory_on_rewind_failure":     true,
			"remove_data_directory_on_diverged_timelines": true,
		},
		"watchdog": map[string]any{"mode": "off", "safety_margin": -1},
		"tags":     n.configTags(),
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	return c.writeServerFile(n.config, string(b)+"\n")
}

// configTags returns the tags of the node's configuration: false for
// Patroni's own boolean tags, then the node's tags over them. The caller
// holds mu, or the node has not started.
func (n *patroniNode) configTags() map[string]any {
	tags := map[string]any{"nofailover": false, "noloadbalance": false, "clonefrom": false, "nosync": false}
	for k, v := range n.tags {
		tags[k] = v
	}
	return tags
}

func (n *patroniNode) apiURL() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(n.apiPort))
}

// setTags rewrites the node's configuration with tags and, if Patroni runs,
// has it reload (POST /reload) and waits until its member in /cluster shows
// them.
func (n *patroniNode) setTags(ctx context.Context, tags map[string]any) error {
	for k := range tags {
		if k == "" {
			return errors.New("SetPatroniTags: an empty tag name")
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.tags = maps.Clone(tags)
	if err := n.writeConfig(); err != nil {
		return err
	}
	if !n.runningLocked() {
		return nil
	}
	// What /cluster shows: Patroni drops its own boolean tags when false.
	want := map[string]any{}
	for k, v := range n.configTags() {
		if b, ok := v.(bool); ok && !b && slices.Contains([]string{"nofailover", "noloadbalance", "clonefrom", "nosync"}, k) {
			continue
		}
		want[k] = v
	}
	wantJSON, err := json.Marshal(want)
	if err != nil {
		return fmt.Errorf("SetPatroniTags: %w", err)
	}
	var wantTags map[string]any
	if err := json.Unmarshal(wantJSON, &wantTags); err != nil {
		return fmt.Errorf("SetPatroniTags: %w", err)
	}
	if n.paused.Load() {
		return errors.New("SetPatroniTags: the node is paused")
	}
	url := n.apiURL()
	status, body, err := n.pc.call(ctx, http.MethodPost, url+"/reload", nil)
	if err != nil {
		return fmt.Errorf("POST /reload: %w", err)
	}
	if status != http.StatusAccepted && status != http.StatusOK {
		return fmt.Errorf("POST /reload: %d %s", status, body)
	}
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	var last string
	for {
		status, body, err := n.pc.call(ctx, http.MethodGet, url+"/cluster", nil)
		if err == nil && status == http.StatusOK {
			var cl struct {
				Members []struct {
					Name string         `json:"name"`
					Tags map[string]any `json:"tags"`
				} `json:"members"`
			}
			if err := json.Unmarshal(body, &cl); err != nil {
				return fmt.Errorf("GET /cluster: %w", err)
			}
			last = fmt.Sprintf("%s is not in /cluster", n.name)
			for _, m := range cl.Members {
				if m.Name != n.name {
					continue
				}
				if m.Tags == nil {
					m.Tags = map[string]any{}
				}
				if reflect.DeepEqual(m.Tags, wantTags) {
					n.c.opts.Logf("testcluster: %s has Patroni tags %s", n.name, wantJSON)
					return nil
				}
				last = fmt.Sprintf("/cluster shows tags %v, want %v", m.Tags, wantTags)
			}
		} else if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("GET /cluster: %d %s", status, body)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("SetPatroniTags: %w (%s)", ctx.Err(), last)
		case <-ticker.C:
		}
	}
}

// patroniParameters turns serverConf's lines into Patroni's parameters,
// without those Patroni sets itself.
func patroniParameters(conf string) map[string]string {
	params := map[string]string{}
	for _, line := range strings.Split(conf, "\n") {
		k, v, ok := strings.Cut(line, " = ")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		switch k {
		case "hot_standby", "wal_log_hints", "recovery_target_timeline", "cluster_name",
			"port", "listen_addresses", "synchronous_standby_names":
			continue
		}
		if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			v = strings.ReplaceAll(v[1:len(v)-1], "''", "'")
		}
		params[k] = v
	}
	return params
}

// startEtcd starts one etcd for the cluster and waits until it answers.
func (pc *patroniCluster) startEtcd(ctx context.Context) error {
	c := pc.c
	clientPort, err := freePort()
	if err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	peerPort, err := freePort()
	if err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	pc.etcdURL = "http://127.0.0.1:" + strconv.Itoa(clientPort)
	pc.etcdPeer = "http://127.0.0.1:" + strconv.Itoa(peerPort)
	pc.etcdDir = filepath.Join(c.dir, "etcd")
	pc.etcdLog = filepath.Join(c.dir, "etcd.log")
	logFile, err := os.OpenFile(pc.etcdLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	cmd := exec.Command(pc.etcdBin,
		"--name", "etcd",
		"--data-dir", pc.etcdDir,
		"--listen-client-urls", pc.etcdURL,
		"--advertise-client-urls", pc.etcdURL,
		"--listen-peer-urls", pc.etcdPeer,
		"--initial-advertise-peer-urls", pc.etcdPeer,
		"--initial-cluster", "etcd="+pc.etcdPeer,
		"--initial-cluster-state", "new",
		"--initial-cluster-token", filepath.Base(c.dir),
		// The data is thrown away with the cluster, as PostgreSQL's is
		// (fsync=off); an fsync stalled by other I/O must not delay
		// Patroni's leader key.
		"--unsafe-no-fsync",
		"--logger", "zap",
		"--log-outputs", "stderr",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = serverEnv(nil)
	cmd.SysProcAttr = sysProcAttr(c.cred, true)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("testcluster: start etcd: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		// Owned by the cluster: ends when etcd exits, which shutdown waits for.
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	pc.mu.Lock()
	pc.etcd, pc.etcdExited = cmd, exited
	pc.mu.Unlock()

	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := pc.state(attemptCtx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("testcluster: etcd exited during start-up; log tail:\n%s", tailFile(pc.etcdLog, 20))
		case <-ctx.Done():
			return fmt.Errorf("testcluster: waiting for etcd: %w (last error: %v)", ctx.Err(), err)
		case <-ticker.C:
		}
	}
}

// shutdown stops what the cluster runs beside the nodes: the follower and
// etcd. It runs once, from the teardown of the last node.
func (pc *patroniCluster) shutdown() error {
	var err error
	pc.shutOnce.Do(func() {
		pc.mu.Lock()
		stop, done := pc.stopFollow, pc.followDone
		cmd, exited := pc.etcd, pc.etcdExited
		pc.mu.Unlock()
		if stop != nil {
			stop()
			<-done
		}
		pc.http.CloseIdleConnections()
		if cmd == nil {
			return
		}
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			err = errors.New("etcd did not exit within 10s of SIGKILL")
		}
	})
	return err
}

// startFollowing keeps the cluster's bookkeeping (Master, SyncReplicas,
// Replicas) in step with Patroni's decisions.
func (pc *patroniCluster) startFollowing() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	pc.mu.Lock()
	pc.stopFollow, pc.followDone = cancel, done
	pc.mu.Unlock()
	go func() {
		// Owned by the cluster: ends on shutdown (Cluster.Stop).
		defer close(done)
		ticker := time.NewTicker(100 * time.Millisecond)
		defer ticker.Stop()
		for {
			reqCtx, reqCancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := pc.state(reqCtx)
			reqCancel()
			if err == nil {
				pc.record(st)
			}
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
}

// patroniState is Patroni's view of the cluster, as it keeps it in etcd.
type patroniState struct {
	leader  string   // the member holding the leader key; "" when none does
	sync    []string // the synchronous standbys of the leader (the /sync key)
	members []string // the members with a member key, in key order
}

// state reads the cluster's keys from etcd (v3 JSON gateway).
func (pc *patroniCluster) state(ctx context.Context) (patroniState, error) {
	prefix := patroniNamespace + patroniScope + "/"
	end := []byte(prefix)
	end[len(end)-1]++
	req, _ := json.Marshal(map[string]string{
		"key":       base64.StdEncoding.EncodeToString([]byte(prefix)),
		"range_end": base64.StdEncoding.EncodeToString(end),
	})
	status, body, err := pc.call(ctx, http.MethodPost, pc.etcdURL+"/v3/kv/range", req)
	if err != nil {
		return patroniState{}, fmt.Errorf("etcd: %w", err)
	}
	if status != http.StatusOK {
		return patroniState{}, fmt.Errorf("etcd: range: %d %s", status, body)
	}
	var resp struct {
		Kvs []struct{ Key, Value []byte } `json:"kvs"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return patroniState{}, fmt.Errorf("etcd: range: %w", err)
	}
	var st patroniState
	var syncLeader, syncStandby string
	for _, kv := range resp.Kvs {
		name := strings.TrimPrefix(string(kv.Key), prefix)
		switch {
		case name == "leader":
			st.leader = string(kv.Value)
		case strings.HasPrefix(name, "members/"):
			st.members = append(st.members, strings.TrimPrefix(name, "members/"))
		case name == "sync":
			var s struct {
				Leader      string  `json:"leader"`
				SyncStandby *string `json:"sync_standby"`
			}
			if json.Unmarshal(kv.Value, &s) == nil && s.SyncStandby != nil {
				syncLeader, syncStandby = s.Leader, *s.SyncStandby
			}
		}
	}
	// The /sync key is about the leader it names; a stale one says nothing.
	if syncLeader != "" && syncLeader == st.leader {
		for _, s := range strings.Split(syncStandby, ",") {
			if s = strings.TrimSpace(s); s != "" {
				st.sync = append(st.sync, s)
			}
		}
	}
	return st, nil
}

var _ scaler = (*patroniCluster)(nil)

// makeNode sets up a new member: ports, proxy, REST API and configuration.
func (pc *patroniCluster) makeNode(i int) (nodeDriver, error) {
	n, err := pc.newNode(i)
	if err != nil {
		return nil, err
	}
	if err := n.writeConfig(); err != nil {
		n.proxy.Close()
		return nil, err
	}
	pc.remaining.Add(1) // its teardown counts down
	return n, nil
}

// join starts the new member's Patroni, which finds the cluster
// initialized in etcd and bootstraps the member from the leader
// (pg_basebackup), and waits until it streams from the leader.
func (pc *patroniCluster) join(ctx context.Context, n *Node) error {
	if err := n.drv.start(ctx); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	var leader *Node
	if err := pc.waitFor(ctx, func(st patroniState) bool {
		leader = pc.c.node(st.leader)
		return leader != nil && leader != n
	}); err != nil {
		return fmt.Errorf("no leader: %w", err)
	}
	_, err := pc.waitSettled(ctx, leader, []string{n.name})
	return err
}

// leave stops the member's Patroni (which stops its server and, if it
// leads, gives up the leader key) and deletes its member key, which would
// otherwise stay until its lease expires; it returns once etcd has no key
// of the member, another member leads, and the leader has dropped the
// member's replication slot.
func (pc *patroniCluster) leave(ctx context.Context, n *Node) error {
	if err := n.drv.stop(); err != nil {
		return err
	}
	key := patroniNamespace + patroniScope + "/members/" + n.name
	req, _ := json.Marshal(map[string]string{"key": base64.StdEncoding.EncodeToString([]byte(key))})
	status, body, err := pc.call(ctx, http.MethodPost, pc.etcdURL+"/v3/kv/deleterange", req)
	if err != nil {
		return fmt.Errorf("etcd: delete %s: %w", key, err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("etcd: delete %s: %d %s", key, status, body)
	}
	var leader *Node
	if err := pc.waitFor(ctx, func(st patroniState) bool {
		leader = pc.c.node(st.leader)
		return leader != nil && leader != n && !slices.Contains(st.members, n.name)
	}); err != nil {
		return fmt.Errorf("%s still a member, or no other leader: %w", n.name, err)
	}
	if err := pc.waitLeader(ctx, leader); err != nil {
		return err
	}
	// Patroni names a member's slot after it: lower case, other than
	// [a-z0-9_] replaced by '_'; n1, n2, ... are their own slot names.
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		var slots int
		attemptCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := leader.queryRow(attemptCtx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '"+n.name+"'", &slots)
		cancel()
		if err == nil && slots == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s keeps a replication slot for %s: %w (last error: %v)", leader.name, n.name, ctx.Err(), err)
		case <-ticker.C:
		}
	}
}

// record updates the cluster's bookkeeping from st and returns the leader.
func (pc *patroniCluster) record(st patroniState) *Node {
	c := pc.c
	leader := c.node(st.leader)
	var syncNames []string
	for _, s := range st.sync {
		if c.node(s) != nil {
			syncNames = append(syncNames, s)
		}
	}
	c.mu.Lock()
	c.master, c.syncNames = leader, syncNames
	c.mu.Unlock()
	return leader
}

// call makes one HTTP request, bounded by ctx and 30 seconds.
func (pc *patroniCluster) call(ctx context.Context, method, url string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := pc.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, bytes.TrimSpace(b), err
}

// api calls node n's Patroni REST API.
func (pc *patroniCluster) api(ctx context.Context, n *Node, method, path string, body any) (int, []byte, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return 0, nil, err
		}
	}
	return pc.call(ctx, method, n.drv.(*patroniNode).apiURL()+path, b)
}

// master asks etcd which member holds Patroni's leader key now.
func (pc *patroniCluster) master() *Node {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := pc.state(ctx)
	if err != nil {
		return nil
	}
	return pc.record(st)
}

// failover makes to the leader through Patroni's REST API and waits until
// it accepts writes and every other running replica (but the former leader)
// streams from it. A switchover in synchronous mode needs a synchronous
// candidate: an asynchronous one is made synchronous first, by raising
// synchronous_node_count for the time of the switchover.
func (pc *patroniCluster) failover(ctx context.Context, to *Node) error {
	begin := time.Now()
	st, err := pc.state(ctx)
	if err != nil {
		return fmt.Errorf("testcluster: failover: %w", err)
	}
	from := st.leader
	if from != to.name {
		if !to.drv.running() {
			return fmt.Errorf("testcluster: failover: %s is not running", to.name)
		}
		if err := pc.handOver(ctx, st, to); err != nil {
			return fmt.Errorf("testcluster: failover to %s: %w", to.name, err)
		}
	}
	var others []string
	for _, n := range pc.c.all() {
		if n != to && n.name != from && n.drv.running() {
			others = append(others, n.name)
		}
	}
	if _, err := pc.waitSettled(ctx, to, others); err != nil {
		return fmt.Errorf("testcluster: failover: %w", err)
	}
	if from == "" {
		from = "(no leader)"
	}
	pc.c.opts.Logf("testcluster: failover from %s to %s in %s: %s", from, to.name, time.Since(begin).Round(time.Millisecond), pc.c.layout())
	return nil
}

// handOver asks Patroni to make to the leader and waits until it is.
func (pc *patroniCluster) handOver(ctx context.Context, st patroniState, to *Node) error {
	leader := pc.c.node(st.leader)
	if pc.syncCount > 0 && leader != nil && !slices.Contains(st.sync, to.name) && pc.alive(ctx, leader) {
		all := len(pc.c.all()) - 1
		if err := pc.setSyncCount(ctx, to, all); err != nil {
			return err
		}
		defer func() {
			// Restored whatever happens; bounded on its own, since ctx may be done.
			restoreCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := pc.setSyncCount(restoreCtx, to, pc.syncCount); err != nil {
				pc.c.opts.Logf("testcluster: restore synchronous_node_count: %v", err)
			}
		}()
		if err := pc.waitFor(ctx, func(st patroniState) bool { return slices.Contains(st.sync, to.name) }); err != nil {
			return fmt.Errorf("%s did not become a synchronous standby: %w", to.name, err)
		}
	}
	status, body, err := pc.api(ctx, to, http.MethodPost, "/failover", map[string]string{"candidate": to.name})
	if err != nil {
		return fmt.Errorf("POST /failover: %w", err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("POST /failover: %d %s", status, body)
	}
	return pc.waitLeader(ctx, to)
}

// alive reports whether n's Patroni answers its REST API.
func (pc *patroniCluster) alive(ctx context.Context, n *Node) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	status, _, err := pc.api(ctx, n, http.MethodGet, "/patroni", nil)
	return err == nil && status < 500
}

func (pc *patroniCluster) setSyncCount(ctx context.Context, via *Node, count int) error {
	status, body, err := pc.api(ctx, via, http.MethodPatch, "/config", map[string]int{"synchronous_node_count": count})
	if err != nil {
		return fmt.Errorf("PATCH /config: %w", err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("PATCH /config: %d %s", status, body)
	}
	return nil
}

// rejoin starts old if it does not run (Patroni rewinds it as needed) and
// waits until it streams from the leader.
func (pc *patroniCluster) rejoin(ctx context.Context, old *Node) error {
	begin := time.Now()
	st, err := pc.state(ctx)
	if err != nil {
		return fmt.Errorf("testcluster: rejoin: %w", err)
	}
	if st.leader == old.name {
		return fmt.Errorf("testcluster: rejoin: %s is the master", old.name)
	}
	if !old.drv.running() {
		if err := old.drv.start(ctx); err != nil {
			return fmt.Errorf("testcluster: rejoin: start %s: %w", old.name, err)
		}
	}
	var leader *Node
	if err := pc.waitFor(ctx, func(st patroniState) bool {
		leader = pc.c.node(st.leader)
		return leader != nil && leader != old
	}); err != nil {
		return fmt.Errorf("testcluster: rejoin: no leader: %w", err)
	}
	if _, err := pc.waitSettled(ctx, leader, []string{old.name}); err != nil {
		return fmt.Errorf("testcluster: rejoin: %w", err)
	}
	pc.c.opts.Logf("testcluster: %s rejoined as a replica of %s in %s", old.name, leader.name, time.Since(begin).Round(time.Millisecond))
	return nil
}

// waitFor polls Patroni's state until ok says so.
func (pc *patroniCluster) waitFor(ctx context.Context, ok func(patroniState) bool) error {
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	var last error
	for {
		st, err := pc.state(ctx)
		if err == nil {
			pc.record(st)
			if ok(st) {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// waitLeader waits until n holds the leader key and its server accepts writes.
func (pc *patroniCluster) waitLeader(ctx context.Context, n *Node) error {
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	var last string
	for {
		st, err := pc.state(ctx)
		switch {
		case err != nil:
			last = err.Error()
		case st.leader != n.name:
			last = fmt.Sprintf("leader key held by %q", st.leader)
		default:
			var inRecovery bool
			attemptCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err = n.queryRow(attemptCtx, "SELECT pg_is_in_recovery()", &inRecovery)
			cancel()
			if err == nil && !inRecovery {
				pc.record(st)
				return nil
			}
			last = fmt.Sprintf("%s holds the leader key; in recovery: %v, error: %v", n.name, inRecovery, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%s)", ctx.Err(), last)
		case <-ticker.C:
		}
	}
}

// waitSettled waits until leader holds the leader key, every name streams
// from it, and Patroni's synchronous standbys (as many as it keeps, given
// the replicas that stream) show sync in its pg_stat_replication.
func (pc *patroniCluster) waitSettled(ctx context.Context, leader *Node, names []string) (patroniState, error) {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	var last string
	for {
		st, err := pc.state(ctx)
		switch {
		case err != nil:
			last = err.Error()
		case st.leader != leader.name:
			last = fmt.Sprintf("leader key held by %q, not %s", st.leader, leader.name)
		default:
			var states map[string]string
			attemptCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
			conn, err := pc.c.connect(attemptCtx, leader.drv.directAddr())
			if err == nil {
				states, err = replicationStates(attemptCtx, conn)
				conn.Close(context.Background())
			}
			cancel()
			if err != nil {
				last = err.Error()
				break
			}
			missing := waitingFor(states, names, st.sync)
			if want := min(pc.syncCount, len(names)); len(st.sync) < want {
				missing = append(missing, fmt.Sprintf("%d synchronous standby(s) in /sync (has %v)", want, st.sync))
			}
			if len(missing) == 0 {
				pc.record(st)
				return st, nil
			}
			last = fmt.Sprintf("waiting for %s (pg_stat_replication on %s: %v)", strings.Join(missing, ", "), leader.name, states)
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("replicas did not settle on %s: %w; %s", leader.name, ctx.Err(), last)
		case <-ticker.C:
		}
	}
}

func (n *patroniNode) addr() string       { return n.proxy.Addr() }
func (n *patroniNode) directAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// runningLocked reports whether the node's keeper, hence Patroni or its
// server, is alive (paused counts). Caller must hold mu.
func (n *patroniNode) runningLocked() bool {
	if n.keeper == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

func (n *patroniNode) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.runningLocked()
}

// start starts Patroni, which starts the server (bootstrapping, cloning,
// rewinding or rejoining as the cluster needs), and returns once the server
// accepts connections.
func (n *patroniNode) start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.runningLocked() {
		return errors.New("already running")
	}
	logFile, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(n.pc.python, n.pc.keeperPath, n.pc.patroniBin, n.config)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = serverEnv(nil)
	cmd.Dir = n.c.dir
	// SIGTERM, not SIGKILL, on the death of this process: the keeper then
	// kills the node's processes, which a dead keeper would orphan.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: n.c.cred, Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start patroni: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		// Owned by the node: ends when the keeper exits, which stop, kill
		// and Cluster.Stop all wait for.
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	n.keeper, n.exited = cmd, exited
	n.paused.Store(false)

	if err := n.waitAccepting(ctx); err != nil {
		_ = n.killLocked()
		return err
	}
	n.proxy.Refuse(false)
	return nil
}

// waitAccepting returns once the server accepts an authenticated connection,
// or fails when the keeper exits or ctx ends. Caller must hold mu.
func (n *patroniNode) waitAccepting(ctx context.Context) error {
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := n.c.connect(attemptCtx, n.directAddr())
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-n.exited:
			return fmt.Errorf("patroni exited during start-up; log tail:\n%s", tailFile(n.logPath, 30))
		case <-ctx.Done():
			return fmt.Errorf("waiting for postgres to accept connections: %w (last error: %v); log tail:\n%s", ctx.Err(), err, tailFile(n.logPath, 30))
		case <-ticker.C:
		}
	}
}

// patroniPid returns the pid of the node's Patroni, 0 if it does not run.
// Caller must hold mu.
func (n *patroniNode) patroniPid() int {
	if !n.runningLocked() {
		return 0
	}
	for _, pid := range childPids(n.keeper.Process.Pid) {
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err == nil && slices.Contains(strings.Split(string(cmdline), "\x00"), n.config) {
			return pid
		}
	}
	return 0
}

// postmasterPid returns the pid in the data directory's postmaster.pid if
// that process is this node's postmaster, else 0.
func (n *patroniNode) postmasterPid() int {
	b, err := os.ReadFile(filepath.Join(n.dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 || !processAlive(pid) {
		return 0
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || !slices.Contains(strings.Split(string(cmdline), "\x00"), n.dataDir) {
		return 0
	}
	return pid
}

// descendants lists the processes under pid, parents before children.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if parent, ok := parentPid(p); ok {
			children[parent] = append(children[parent], p)
		}
	}
	var found []int
	for todo := []int{pid}; len(todo) > 0; {
		p := todo[0]
		todo = todo[1:]
		found = append(found, children[p]...)
		todo = append(todo, children[p]...)
	}
	return found
}

func (n *patroniNode) stop() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.runningLocked() {
		n.proxy.Refuse(true)
		return nil
	}
	if n.paused.Load() {
		n.resumeLocked()
	}
	// Patroni stops the server (fast shutdown), gives up the leader key if
	// it holds it, and exits; the keeper exits with it.
	if pid := n.patroniPid(); pid != 0 {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			return fmt.Errorf("signal patroni: %w", err)
		}
	} else if err := n.keeper.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal keeper: %w", err)
	}
	const timeout = 60 * time.Second
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var err error
	select {
	case <-n.exited:
	case <-timer.C:
		err = fmt.Errorf("patroni did not shut down within %s; killed it", timeout)
		_ = n.killLocked()
	}
	n.proxy.Refuse(true)
	return err
}

// killLocked kills Patroni, the server and anything else of the node at
// once: everything is frozen first, Patroni before the server, so nothing
// reacts or forks, then killed; the keeper reaps them and exits. Caller
// must hold mu.
func (n *patroniNode) killLocked() error {
	if !n.runningLocked() {
		return nil
	}
	keeper := n.keeper.Process.Pid
	for _, pid := range descendants(keeper) {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
	var children []int
	if pm := n.postmasterPid(); pm != 0 {
		children = killTree(pm)
		defer removeShmem(n.dataDir, n.c.cred)
	}
	for _, pid := range descendants(keeper) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	var err error
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		err = errors.New("the node's processes did not exit within 10s of SIGKILL")
		_ = n.keeper.Process.Kill()
		<-n.exited
	}
	reap(children, 5*time.Second)
	n.paused.Store(false)
	return err
}

func (n *patroniNode) kill() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.runningLocked() {
		return errors.New("not running")
	}
	// Reset the clients first, as a crashed host's kernel would.
	n.proxy.Refuse(true)
	return n.killLocked()
}

func (n *patroniNode) pause() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.runningLocked() {
		return errors.New("not running")
	}
	if n.paused.Load() {
		return nil
	}
	// Parents before children: a frozen process cannot fork.
	for _, pid := range descendants(n.keeper.Process.Pid) {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
	n.paused.Store(true)
	return nil
}

func (n *patroniNode) resume() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.runningLocked() {
		return errors.New("not running")
	}
	if n.paused.Load() {
		n.resumeLocked()
	}
	return nil
}

// resumeLocked continues every process of the node, children first, so the
// server runs again before Patroni looks at it. Caller must hold mu.
func (n *patroniNode) resumeLocked() {
	pids := descendants(n.keeper.Process.Pid)
	slices.Reverse(pids)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
	n.paused.Store(false)
}

func (n *patroniNode) faultState() Faults {
	return Faults{Paused: n.paused.Load(), Partitioned: n.proxy.Partitioned(), Latency: n.proxy.Latency()}
}

func (n *patroniNode) partition() error { n.proxy.Partition(); return nil }
func (n *patroniNode) heal() error      { n.proxy.Heal(); return nil }

func (n *patroniNode) setLatency(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("negative latency %s", d)
	}
	n.proxy.SetLatency(d)
	return nil
}

// errPatroniManages is returned by the operations Patroni does itself.
var errPatroniManages = errors.New("replication is managed by Patroni in this cluster: use Cluster.Failover and Cluster.Rejoin")

// primaryConnInfo is the conninfo Patroni gives replicas of this node: its
// connect_address, the node's proxy. Patroni writes it; nothing here uses it.
func (n *patroniNode) primaryConnInfo(app string) string {
	host, port, _ := net.SplitHostPort(n.proxy.Addr())
	return fmt.Sprintf("host=%s port=%s user=%s application_name=%s sslmode=disable", host, port, replicationUser, app)
}

func (n *patroniNode) makeStandby(*Node) error             { return errPatroniManages }
func (n *patroniNode) rewind(context.Context, *Node) error { return errPatroniManages }
func (n *patroniNode) logTail(lines int) string            { return tailFile(n.logPath, lines) }
func (n *patroniNode) close() error                        { return n.proxy.Close() }

// teardown kills the node at once; the last node's teardown also stops
// etcd, so Cluster.Stop leaves nothing behind.
func (n *patroniNode) teardown() error {
	n.mu.Lock()
	n.proxy.Refuse(true)
	err := n.killLocked()
	n.mu.Unlock()
	if n.pc.remaining.Add(-1) <= 0 {
		if err2 := n.pc.shutdown(); err2 != nil {
			err = errors.Join(err, fmt.Errorf("etcd: %w", err2))
		}
	}
	return err
}
