package testcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PgBouncerMode is the pool mode of the PgBouncer that Options.PgBouncer puts
// in front of every node.
type PgBouncerMode string

const (
	// PgBouncerNone: clients reach the nodes through their fault proxies
	// alone (the default).
	PgBouncerNone PgBouncerMode = ""
	// PgBouncerSession: a client keeps one server connection for its whole
	// session.
	PgBouncerSession PgBouncerMode = "session"
	// PgBouncerTransaction: a client holds a server connection only for the
	// length of a transaction.
	PgBouncerTransaction PgBouncerMode = "transaction"
)

func (m PgBouncerMode) validate() error {
	switch m {
	case PgBouncerNone, PgBouncerSession, PgBouncerTransaction:
		return nil
	}
	return fmt.Errorf("testcluster: PgBouncer %q: want %q or %q", string(m), PgBouncerSession, PgBouncerTransaction)
}

// bouncer is one PgBouncer process in front of one local node: the node's
// fault proxy forwards to it, it forwards to the server. Replication does
// not go through it (PgBouncer 1.18 has no replication connections): the
// node gets a second proxy for its replicas, which faults act on too.
type bouncer struct {
	mode    PgBouncerMode
	dir     string // its ini, auth file, log and pid file
	port    int
	proc    *exec.Cmd
	exited  chan struct{}
	logPath string
}

// FindPgBouncer returns the pgbouncer program: PGXHA_PGBOUNCER, then PATH,
// then /usr/sbin (where Debian's package puts it). scripts/ensure-pgbouncer.sh
// installs it.
func FindPgBouncer() (string, error) {
	if p := os.Getenv("PGXHA_PGBOUNCER"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("testcluster: PGXHA_PGBOUNCER=%s: %w", p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/pgbouncer"); err == nil {
		return "/usr/sbin/pgbouncer", nil
	}
	return "", errors.New("testcluster: pgbouncer not found (PGXHA_PGBOUNCER, PATH, /usr/sbin); scripts/ensure-pgbouncer.sh installs Debian's package")
}

func (b *bouncer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

// config is the bouncer's pgbouncer.ini for a server on serverPort.
// Clients authenticate to PgBouncer with the cluster's password (SCRAM), and
// PgBouncer to the server with the same. server_login_retry is short so that
// a node that comes back is served again within half a second.
func (b *bouncer) config(c *Cluster, serverPort int) string {
	poolSize := 20
	if b.mode == PgBouncerSession {
		// A client holds a server connection for its whole session: room
		// for as many as the server takes, less what the harness and
		// replication use.
		poolSize = 180
		if v, err := strconv.Atoi(c.opts.Settings["max_connections"]); err == nil && v > 40 {
			poolSize = v - 20
		}
	}
	return fmt.Sprintf(`;; managed by testcluster
[databases]
* = host=127.0.0.1 port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %s
pool_mode = %s
default_pool_size = %d
max_client_conn = 2000
server_login_retry = 0.5
server_connect_timeout = 2
ignore_startup_parameters = extra_float_digits
logfile = %s
pidfile = %s
log_connections = 0
log_disconnections = 0
`, serverPort, b.port, filepath.Join(b.dir, "users.txt"), b.mode, poolSize, b.logPath, filepath.Join(b.dir, "pgbouncer.pid"))
}

// start writes the bouncer's files and starts it, as the server's user
// (PgBouncer refuses to run as root), for a server on serverPort.
func (b *bouncer) start(ctx context.Context, c *Cluster, serverPort int) error {
	prog, err := FindPgBouncer()
	if err != nil {
		return err
	}
	if b.port == 0 {
		if b.port, err = freePort(); err != nil {
			return err
		}
	}
	users := fmt.Sprintf("%q %q\n", c.opts.User, c.opts.Password)
	if err := c.writeServerFile(filepath.Join(b.dir, "users.txt"), users); err != nil {
		return err
	}
	ini := filepath.Join(b.dir, "pgbouncer.ini")
	if err := c.writeServerFile(ini, b.config(c, serverPort)); err != nil {
		return err
	}
	cmd := exec.Command(prog, ini)
	cmd.Dir = b.dir
	cmd.Env = serverEnv(nil)
	cmd.SysProcAttr = sysProcAttr(c.cred, true)
	out, err := os.OpenFile(filepath.Join(b.dir, "stderr.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start pgbouncer: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		// Owned by the bouncer: ends when the process exits, which stop
		// waits for.
		_ = cmd.Wait()
		out.Close()
		close(exited)
	}()
	b.proc, b.exited = cmd, exited
	// Ready once a query through it reaches the server on serverPort: a
	// dial alone is answered by whatever listens on the port, which is
	// another program's when this PgBouncer could not bind it (it then
	// exits, a moment later).
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for {
		port, err := b.serverPort(ctx, c)
		if err == nil {
			select {
			case <-exited:
			default:
				if port == serverPort {
					return nil
				}
				b.stop()
				return fmt.Errorf("%w: %s reaches the server on port %d, not %d", errPortTaken, b.addr(), port, serverPort)
			}
		}
		select {
		case <-exited:
			b.proc = nil
			logs := tailFile(filepath.Join(b.dir, "stderr.log"), 10) + tailFile(b.logPath, 10)
			if strings.Contains(logs, "Address already in use") {
				return fmt.Errorf("%w: %s: %s", errPortTaken, b.addr(), logs)
			}
			return fmt.Errorf("pgbouncer exited during start-up: %s", logs)
		case <-ctx.Done():
			b.stop()
			return fmt.Errorf("waiting for pgbouncer: %w", ctx.Err())
		case <-ticker.C:
		}
	}
}

// errPortTaken: another program listens on the port picked for a
// PgBouncer; the caller picks another.
var errPortTaken = errors.New("port taken")

// serverPort asks, through the bouncer, which port the server it forwards
// to listens on (simple protocol: transaction pooling keeps no prepared
// statement).
func (b *bouncer) serverPort(ctx context.Context, c *Cluster) (int, error) {
	attemptCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := c.connect(attemptCtx, b.addr())
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var port int
	err = conn.QueryRow(attemptCtx, "SELECT inet_server_port()", pgx.QueryExecModeSimpleProtocol).Scan(&port)
	return port, err
}

// retarget points the bouncer at a server that moved to serverPort
// (SIGHUP: PgBouncer rereads its configuration).
func (b *bouncer) retarget(c *Cluster, serverPort int) error {
	if err := c.writeServerFile(filepath.Join(b.dir, "pgbouncer.ini"), b.config(c, serverPort)); err != nil {
		return err
	}
	if b.proc == nil {
		return nil
	}
	return b.proc.Process.Signal(syscall.SIGHUP)
}

// stop ends the bouncer (SIGINT: immediate shutdown) and waits for it.
func (b *bouncer) stop() error {
	if b.proc == nil {
		return nil
	}
	_ = b.proc.Process.Signal(syscall.SIGINT)
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case <-b.exited:
	case <-timer.C:
		_ = b.proc.Process.Kill()
		<-b.exited
	}
	b.proc = nil
	return nil
}
