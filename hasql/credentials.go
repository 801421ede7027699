package hasql

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgpassfile"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// PasswordFunc returns the password for a new connection to node: a token
// from an identity service (AWS RDS IAM, Azure AD, GCP) or a secret that
// rotates. It is called before every connection the Manager opens (the
// node's pool, its check connection, Listen, DB), with the context of that
// connect; it must be safe for concurrent use. An error fails that connect
// (a check that cannot connect marks the node down) and is reported with
// the node's address; it must not hold the password.
type PasswordFunc func(ctx context.Context, node NodeConfig) (string, error)

// WithPasswordFunc sets Config.PasswordFunc.
func WithPasswordFunc(f PasswordFunc) Option {
	return func(c *Config) error { c.PasswordFunc = f; return nil }
}

// withCredentials returns the BeforeConnect hook of n's pool: the
// password of the connection string (from the passfile entry of n's own
// host and port when the password comes from a passfile), then
// Config.PasswordFunc's, then user, the pool's own BeforeConnect (set on
// PoolConfig or by ConfigureNode), which may change them again.
func (n *node) withCredentials(user func(context.Context, *pgx.ConnConfig) error) func(context.Context, *pgx.ConnConfig) error {
	cfg := n.m.cfg
	return func(ctx context.Context, cc *pgx.ConnConfig) error {
		if err := n.auth.allow(n.cfg.Addr, time.Now()); err != nil {
			return err
		}
		if cfg.passfile != "" && cc.Password == cfg.passfileFirst {
			cc.Password = passfilePassword(cfg.passfile, n.cfg.Host, n.cfg.Port, cc.Database, cc.User)
		}
		if cfg.PasswordFunc != nil {
			pw, err := cfg.PasswordFunc(ctx, n.cfg)
			if err != nil {
				return fmt.Errorf("hasql: PasswordFunc for %s: %w", n.cfg.Addr, err)
			}
			cc.Password = pw
		}
		if user != nil {
			return user(ctx, cc)
		}
		return nil
	}
}

// connectCheck opens n's check connection with the credentials a pool
// connection would get (see withCredentials); nothing else of the pool's
// BeforeConnect applies to it.
func (n *node) connectCheck(ctx context.Context) (*pgx.Conn, error) {
	cc := n.checkCfg.Copy()
	if err := n.credentials(ctx, cc); err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	err = scrubConnect(err)
	n.connected(err)
	if err == nil {
		conn.PgConn().Frontend().SetMaxBodyLen(maxStartupMessage) // see maxPreAuthMessage
	}
	return conn, err
}

// credentials sets in cc the user and password a new connection to n gets.
func (n *node) credentials(ctx context.Context, cc *pgx.ConnConfig) error {
	scratch := n.pool.Config().ConnConfig
	if err := n.beforeConnect(ctx, scratch); err != nil {
		return err
	}
	cc.User, cc.Password = scratch.User, scratch.Password
	return nil
}

// findPassfile notes the passfile when the connection string's password
// comes from one, so that each node gets the entry of its own host and
// port, read at each connect, as libpq does (pgconn's ParseConfig looks up
// the first host's entry only, for every host).
func (cfg *Config) findPassfile(raw rawSettings) {
	if passwordOf(raw.connString) != "" || os.Getenv("PGPASSWORD") != "" || len(cfg.Nodes) == 0 {
		return
	}
	path, ok := raw.lookup("passfile")
	if !ok {
		path = os.Getenv("PGPASSFILE")
	}
	if path == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return
		}
		path = filepath.Join(home, ".pgpass")
	}
	cc := cfg.PoolConfig.ConnConfig
	first := passfilePassword(path, cfg.Nodes[0].Host, cfg.Nodes[0].Port, cc.Database, cc.User)
	if first != cc.Password {
		return // not the passfile's (a service file's, say)
	}
	cfg.passfile, cfg.passfileFirst = path, first
}

// passfilePassword returns the password of the passfile's entry for a
// connection, "" when there is none or the file cannot be read. A Unix
// socket directory matches the host name localhost, as in libpq.
func passfilePassword(path, host string, port uint16, database, user string) string {
	pf, err := pgpassfile.ReadPassfile(path)
	if err != nil {
		return ""
	}
	if network, _ := pgconn.NetworkAddress(host, port); network == "unix" {
		host = "localhost"
	}
	return pf.FindPassword(host, strconv.Itoa(int(port)), database, user)
}
