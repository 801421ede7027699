package hasql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"net"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Target is where a *sql.DB made by DB sends its connections.
type Target int

const (
	// TargetDefault follows the connection string's target_session_attrs:
	// read-only and standby mean replicas, prefer-standby replicas with the
	// master as fallback, anything else (read-write, primary, any) the
	// master.
	TargetDefault Target = iota
	// TargetMaster: every connection goes to the master.
	TargetMaster
	// TargetReplica: every connection goes to a replica chosen with the
	// ReplicaOptions given to DB.
	TargetReplica
	// TargetAuto splits by itself: transactions begun with ReadOnly
	// (sql.TxOptions{ReadOnly: true}) and statements whose context was
	// marked with ReadOnly run on a replica chosen with the ReplicaOptions
	// given to DB (the Manager's defaults without any); everything else on
	// the master. See DB.
	TargetAuto
)

const customDataNode = "pgxha.node"

// DB returns a *sql.DB, through pgx's stdlib driver, whose connections go to
// the node the target routes to, for database/sql users (sqlc, sqlx, goose,
// ...). Each new connection is opened on a node the manager picks, waiting
// for one as an acquire does; before a pooled connection is reused,
// database/sql asks the manager whether its node still qualifies, and a
// connection whose node lost its role is discarded. database/sql keeps its
// own pool of these connections (not the manager's pgx pools); close the
// *sql.DB when done, before closing the Manager.
//
// With TargetAuto, one *sql.DB serves reads and writes: each of its
// connections holds up to two server connections, one to the master and
// one to a replica, each opened on first use and re-validated as above;
// a transaction runs on the replica when begun with ReadOnly, on the master
// otherwise, and a statement outside a transaction on the replica when its
// context was marked with ReadOnly, on the master otherwise. Options that
// depend on the caller's own write (MinLSN, After) have no place in a
// *sql.DB shared by every request: read those through m.Replica.
func (m *Manager) DB(t Target, opts ...ReplicaOption) *sql.DB {
	switch t {
	case TargetAuto:
		return m.autoDB(opts)
	case TargetDefault, TargetMaster, TargetReplica:
	default:
		// DB returns no error: every connection of the *sql.DB fails,
		// naming the value, rather than go where no target said.
		return sql.OpenDB(badTarget{t})
	}
	tg, o := m.resolveTarget(t, opts)
	return sql.OpenDB(m.connector(tg, o))
}

// connector makes the database/sql connector of DB for t and o.
func (m *Manager) connector(tg target, o *replicaOptions) *dbConnector {
	base := m.cfg.PoolConfig.ConnConfig
	if nodes := m.nodesNow(); len(nodes) > 0 {
		base = nodes[0].pool.Config().ConnConfig
	}
	inner := stdlib.GetConnector(*base,
		stdlib.OptionBeforeConnect(func(ctx context.Context, cfg *pgx.ConnConfig) error {
			n, _ := ctx.Value(pickedKey{}).(*node) // picked by dbConnector.Connect
			if n == nil {
				// database/sql's connect may have no deadline: bounded like
				// an acquire (Config.AcquireTimeout).
				pctx, cancel := m.boundAcquire(ctx)
				var err error
				n, err = m.pick(pctx, tg, o)
				cancel()
				if err != nil {
					return err
				}
			}
			*cfg = *n.pool.Config().ConnConfig
			if t, ok := cfg.Tracer.(*nodeTracer); ok {
				cfg.Tracer = t.forDB()
			}
			return n.beforeConnect(ctx, cfg)
		}),
		stdlib.OptionAfterConnect(func(ctx context.Context, conn *pgx.Conn) error {
			if n := m.nodeOf(conn); n != nil {
				conn.PgConn().CustomData()[customDataNode] = n
			}
			return nil
		}),
		stdlib.OptionResetSession(func(ctx context.Context, conn *pgx.Conn) error {
			// Its node may have lost the role, or its name moved to
			// another server since the connection was made.
			n, _ := conn.PgConn().CustomData()[customDataNode].(*node)
			if n == nil || !m.qualifies(n, tg, o) || !n.reaches(conn.PgConn()) {
				return driver.ErrBadConn
			}
			// A session the server ended while the connection was idle
			// (pg_terminate_backend, idle_session_timeout, a restart) left
			// its FATAL on the socket: database/sql opens another instead
			// of handing the caller the error (stdlib pings only after a
			// second idle). See shouldPingHook for the pools.
			if sessionEndedWhileIdle(conn) {
				return driver.ErrBadConn
			}
			return nil
		}),
	)
	return &dbConnector{Connector: inner, m: m, t: tg, o: o}
}

// dbConnector re-validates every connection DB opens, as an acquire does:
// the node was picked before the connection was made, and may have lost
// its role while it connected. Such a connection is closed and another
// node picked, a bounded number of times. A connection being made to a
// node that leaves the node set is given up at once, and another node
// picked.
type dbConnector struct {
	driver.Connector
	m *Manager
	t target
	o *replicaOptions
}

// pickedKey is the context key of the node dbConnector.Connect picked.
type pickedKey struct{}

func (c *dbConnector) Connect(ctx context.Context) (driver.Conn, error) {
	if c.o != nil && c.o.hasAfter {
		return nil, errAfterInDB
	}
	var lastErr error
	for range 2*len(c.m.nodesNow()) + 1 {
		s := c.m.snap.Load()
		// database/sql's connect may have no deadline: the wait for a node
		// is bounded like an acquire's (Config.AcquireTimeout).
		pctx, pcancel := c.m.boundAcquire(ctx)
		n, err := c.m.pick(pctx, c.t, c.o)
		pcancel()
		if err != nil {
			return nil, err
		}
		cctx, release := n.whileIn(context.WithValue(ctx, pickedKey{}, n))
		dc, err := c.Connector.Connect(cctx)
		release()
		err = scrubConnect(err) // no password in what database/sql returns
		if err != nil && ctx.Err() == nil && c.m.ctx.Err() == nil && n.removed.Load() {
			lastErr = err // the node left the set while connecting: pick again
			continue
		}
		if err != nil && ctx.Err() == nil && c.m.ctx.Err() != nil {
			return nil, ErrClosed // the connect was cut by Close
		}
		if err != nil {
			// The node may have failed or lost its role while the
			// connection was made (its connections are cut then): once
			// the view changes, pick again.
			lastErr = err
			if ctx.Err() == nil {
				n.connectFailed("DB connect", err)
			}
			if ctx.Err() != nil || c.m.ctx.Err() != nil || !c.m.waitChange(ctx, s, c.m.cfg.CheckTimeout) {
				return nil, err
			}
			continue
		}
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return dc, nil
		}
		if got, _ := sc.Conn().PgConn().CustomData()[customDataNode].(*node); got != nil && c.m.qualifies(got, c.t, c.o) && got.reaches(sc.Conn().PgConn()) {
			return dc, nil
		}
		dc.Close()
		if err := ctx.Err(); err != nil {
			return nil, c.m.noNode(c.t, c.o, err)
		}
	}
	if lastErr != nil {
		return nil, lastErr
	}
	return nil, fmt.Errorf("hasql: DB: the roles kept changing while connecting: %w", c.m.noNode(c.t, c.o, nil))
}

func (m *Manager) resolveTarget(t Target, opts []ReplicaOption) (target, *replicaOptions) {
	var o *replicaOptions
	if len(opts) > 0 {
		o = new(replicaOptions)
		applyOptions(o, opts)
	}
	if t == TargetDefault {
		switch m.cfg.TargetSessionAttrs {
		case "read-only", "standby":
			t = TargetReplica
		case "prefer-standby":
			t = TargetReplica
			if o == nil {
				o = new(replicaOptions)
			}
			o.fallback = true
		default:
			t = TargetMaster
		}
	}
	if t == TargetMaster {
		return targetMaster, nil
	}
	return targetReplica, o
}

// pick chooses a node for t without acquiring from its pool, waiting for
// one like an acquire.
func (m *Manager) pick(ctx context.Context, t target, o *replicaOptions) (*node, error) {
	for {
		s := m.snap.Load()
		if s.closed {
			return nil, ErrClosed
		}
		var set candidateSet
		var err error
		if o != nil && o.minLSN != 0 {
			set = m.customSet(s, o)
		} else {
			set, err = m.candidates(s, t, o, nil)
		}
		if err != nil {
			return nil, err
		}
		if len(set.nodes) > 0 {
			return set.nodes[set.pick()], nil
		}
		select {
		case <-s.changed:
		case <-m.closed:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, m.noNode(t, o, ctxErr(ctx))
		}
	}
}

// qualifies reports whether n is still a candidate for t.
func (m *Manager) qualifies(n *node, t target, o *replicaOptions) bool {
	s := m.snap.Load()
	if s.closed {
		return false
	}
	if o != nil && o.minLSN != 0 {
		return slices.Contains(m.customSet(s, o).nodes, n)
	}
	set, err := m.candidates(s, t, o, nil)
	return err == nil && slices.Contains(set.nodes, n)
}

// nodeOf finds the node a connection reaches.
func (m *Manager) nodeOf(conn *pgx.Conn) *node {
	cfg := conn.Config()
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	for _, n := range m.nodesNow() {
		if n.cfg.Addr == addr || n.cfg.Host == cfg.Host && n.cfg.Port == cfg.Port {
			return n
		}
	}
	return nil
}

// badTarget is the connector of DB for a Target that is none of the
// constants: every connect fails, naming it.
type badTarget struct{ t Target }

func (b badTarget) Connect(context.Context) (driver.Conn, error) {
	return nil, fmt.Errorf("hasql: DB: unknown Target %d: want TargetDefault, TargetMaster, TargetReplica or TargetAuto", int(b.t))
}

func (badTarget) Driver() driver.Driver { return stdlib.GetDefaultDriver() }
