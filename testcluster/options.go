package testcluster

import (
	"fmt"
	"os"
	"strings"
)

// Options configures a cluster. The zero Options starts the layout most tests
// want: one master and two replicas, the first synchronous, the second
// asynchronous.
type Options struct {
	// Replicas is the number of replicas beside the master. 0 means 2 when
	// SyncReplicas is 0 too (the default layout); -1 means a master alone.
	Replicas int

	// SyncReplicas is how many of the replicas are synchronous
	// (synchronous_standby_names = 'FIRST k (...)', synchronous_commit = on).
	// The first SyncReplicas replicas (n2, n3, ...) are synchronous, the rest
	// asynchronous. With the zero Options it is 1.
	SyncReplicas int

	// User, Password and Database are the superuser and database of the DSN.
	// Defaults: "postgres", "pgxha", "postgres"; with BackendCompose the
	// password is "postgres", as in docker-compose.replication.yml.
	User, Password, Database string

	// Dir is where the cluster's temporary directory is made. Default: the
	// system temporary directory.
	Dir string

	// BinDir holds the PostgreSQL server programs. Default: see FindBinDir.
	BinDir string

	// Settings are extra postgresql.conf settings for every node.
	Settings map[string]string

	// ServerTLS, when set, turns TLS on in every node (ssl = on), with
	// this certificate and key, and this CA for the client certificates
	// the server asks for (ssl_ca_file). Local backend only. Replication
	// connections between nodes stay plain.
	ServerTLS *ServerTLS

	// HBA are pg_hba.conf lines put before testcluster's own (which allow
	// the harness in, and passwords over TCP): a hostssl line with
	// clientcert=verify-full, say. Local backend only.
	HBA []string

	// Backend selects how nodes run: BackendLocal (processes on this
	// machine, the default), BackendCompose (containers of
	// docker-compose.replication.yml) or BackendPatroni (local processes
	// managed by Patroni and etcd). The PGXHA_TESTCLUSTER environment
	// variable names the backend when Backend is empty.
	Backend Backend

	// ComposeProject, with BackendCompose, attaches to the running compose
	// project of that name (such as "pgxha", which `make compose-up`
	// starts) instead of starting a new one: the cluster is what the
	// project runs now (see Cluster.Status), with its credentials, and
	// Stop leaves it running. New converges it when the test ends, so the
	// next test finds it whole. Replicas, SyncReplicas, User, Password and
	// Database are then the project's. The PGXHA_COMPOSE_PROJECT
	// environment variable names the project when ComposeProject is empty
	// and the backend is compose.
	ComposeProject string

	// PgBouncer, when set, puts a PgBouncer (Debian's pgbouncer package)
	// in that pool mode in front of every node, behind its fault proxy:
	// clients reach proxy → PgBouncer → server, so chaos operations act on
	// the client side of PgBouncer as a network fault would. Local backend
	// only; the PGXHA_TESTCLUSTER_PGBOUNCER environment variable names the
	// mode when PgBouncer is empty.
	PgBouncer PgBouncerMode

	// Logf receives progress lines (start-up, chaos operations). Default:
	// none. New sets it to t.Logf.
	Logf func(format string, args ...any)
}

// ServerTLS is a server's certificate, its key and the CA of client
// certificates, in PEM.
type ServerTLS struct {
	CertPEM, KeyPEM, ClientCAPEM []byte
}

// Backend is where a cluster's nodes run.
type Backend string

const (
	// BackendLocal runs every node as a local process, behind a fault proxy.
	BackendLocal Backend = "local"
	// BackendCompose runs the nodes as containers of
	// docker-compose.replication.yml.
	BackendCompose Backend = "compose"
	// BackendPatroni runs every node as a local PostgreSQL managed by a
	// local Patroni, with etcd as the configuration store, each behind a
	// fault proxy. Patroni, not the test, decides failovers.
	BackendPatroni Backend = "patroni"
)

// withDefaults fills in defaults and validates o.
func (o Options) withDefaults() (Options, error) {
	if o.Replicas == 0 && o.SyncReplicas == 0 {
		o.Replicas, o.SyncReplicas = 2, 1
	}
	if o.Replicas < 0 {
		if o.Replicas != -1 {
			return o, fmt.Errorf("testcluster: Replicas %d: want -1 (no replica) or more", o.Replicas)
		}
		o.Replicas = 0
	}
	if o.SyncReplicas < 0 || o.SyncReplicas > o.Replicas {
		return o, fmt.Errorf("testcluster: SyncReplicas %d: want 0 to Replicas (%d)", o.SyncReplicas, o.Replicas)
	}
	if o.Replicas > 62 {
		return o, fmt.Errorf("testcluster: Replicas %d: at most 62", o.Replicas)
	}
	if o.Backend == "" {
		o.Backend = Backend(strings.TrimSpace(os.Getenv("PGXHA_TESTCLUSTER")))
	}
	if o.Backend == "" {
		o.Backend = BackendLocal
	}
	switch o.Backend {
	case BackendLocal, BackendCompose, BackendPatroni:
	default:
		return o, fmt.Errorf("testcluster: unknown backend %q: want %q, %q or %q", o.Backend, BackendLocal, BackendCompose, BackendPatroni)
	}
	if o.ComposeProject == "" && o.Backend == BackendCompose {
		o.ComposeProject = strings.TrimSpace(os.Getenv("PGXHA_COMPOSE_ATTACH"))
	}
	if o.ComposeProject != "" && o.Backend != BackendCompose {
		return o, fmt.Errorf("testcluster: ComposeProject %q is for the compose backend, not %q", o.ComposeProject, o.Backend)
	}
	if o.User == "" {
		o.User = "postgres"
	}
	if o.Password == "" {
		// docker-compose.replication.yml's, so that `make compose-up`
		// and the compose backend share one DSN's credentials.
		o.Password = "pgxha"
		if o.Backend == BackendCompose {
			o.Password = "postgres"
		}
	}
	if o.Database == "" {
		o.Database = "postgres"
	}
	if o.PgBouncer == PgBouncerNone && o.Backend == BackendLocal {
		o.PgBouncer = PgBouncerMode(strings.TrimSpace(os.Getenv("PGXHA_TESTCLUSTER_PGBOUNCER")))
	}
	if err := o.PgBouncer.validate(); err != nil {
		return o, err
	}
	if o.PgBouncer != PgBouncerNone && o.Backend != BackendLocal {
		return o, fmt.Errorf("testcluster: PgBouncer is for the local backend only, not %q", o.Backend)
	}
	if (o.ServerTLS != nil || len(o.HBA) > 0) && o.Backend != BackendLocal {
		return o, fmt.Errorf("testcluster: ServerTLS and HBA are for the local backend only, not %q", o.Backend)
	}
	if t := o.ServerTLS; t != nil && (len(t.CertPEM) == 0 || len(t.KeyPEM) == 0) {
		return o, fmt.Errorf("testcluster: ServerTLS needs CertPEM and KeyPEM")
	}
	for i, line := range o.HBA {
		if strings.ContainsAny(line, "\n\r") {
			return o, fmt.Errorf("testcluster: HBA line %d holds a line break: give one line per entry", i+1)
		}
	}
	for k := range o.Settings {
		if !validSettingName(k) {
			return o, fmt.Errorf("testcluster: setting name %q: want letters, digits, '_' and '.'", k)
		}
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o, nil
}

func validSettingName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}
