package hasql_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// rogueSQL turns a writable PostgreSQL server into one that lies to the
// checks: functions of schema rogue, first in the check user's
// search_path, shadow pg_catalog's and answer from rogue.state. Everything
// else (system identifier, start time, the tables) is the server's own.
const rogueSQL = `
CREATE SCHEMA rogue;
CREATE TABLE rogue.state (rec bool, lsn pg_lsn, tli int4, conninfo text);
CREATE FUNCTION rogue.pg_is_in_recovery() RETURNS bool LANGUAGE sql VOLATILE AS $$SELECT rec FROM rogue.state$$;
CREATE FUNCTION rogue.pg_last_wal_replay_lsn() RETURNS pg_lsn LANGUAGE sql VOLATILE AS $$SELECT lsn FROM rogue.state$$;
CREATE FUNCTION rogue.pg_current_wal_lsn() RETURNS pg_lsn LANGUAGE sql VOLATILE AS $$SELECT lsn FROM rogue.state$$;
CREATE FUNCTION rogue.pg_last_wal_receive_lsn() RETURNS pg_lsn LANGUAGE sql VOLATILE AS $$SELECT CASE WHEN rec THEN lsn END FROM rogue.state$$;
CREATE FUNCTION rogue.pg_last_xact_replay_timestamp() RETURNS timestamptz LANGUAGE sql VOLATILE AS $$SELECT CASE WHEN rec THEN clock_timestamp() END FROM rogue.state$$;
CREATE FUNCTION rogue.pg_is_wal_replay_paused() RETURNS bool LANGUAGE sql VOLATILE AS $$SELECT false$$;
CREATE FUNCTION rogue.pg_walfile_name(pg_lsn) RETURNS text LANGUAGE sql VOLATILE AS $$SELECT lpad(to_hex(tli), 8, '0') || '0000000000000001' FROM rogue.state$$;
CREATE TYPE rogue.wr AS (pid int4, status text, conninfo text, received_tli int4);
CREATE FUNCTION rogue.pg_stat_get_wal_receiver() RETURNS rogue.wr LANGUAGE sql VOLATILE AS $$SELECT CASE WHEN rec THEN ROW(4242, 'streaming', conninfo, tli)::rogue.wr END FROM rogue.state$$;
`

// TestRestrictedUserRogueNamesake: the check user lacks pg_monitor, so the
// master's walsender rows show no client address. A server in the
// discovered set (a clone of the cluster, promoted, lying through rogueSQL)
// plays a replica that streams from the master under the name of one of
// our replicas, n2. The row named n2 may be either's: it proves nothing of
// the server nothing vouches for, which must not serve reads; n2 still
// does.
func TestRestrictedUserRogueNamesake(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	execOn(t, ctx, n1, "CREATE ROLE watcher LOGIN PASSWORD 'w'", "CREATE TABLE whoami (who text)", "GRANT SELECT ON whoami TO watcher",
		"INSERT INTO whoami VALUES ('the cluster')")
	rogue, err := c.AddNode(ctx)
	require.NoError(t, err)
	require.NoError(t, rogue.Promote(ctx))
	_, n1Port, _ := net.SplitHostPort(n1.Addr())
	execOn(t, ctx, rogue, rogueSQL,
		fmt.Sprintf("INSERT INTO rogue.state VALUES (true, '0/100', 1, 'host=127.0.0.1 port=%s user=x application_name=n2')", n1Port),
		"GRANT USAGE ON SCHEMA rogue TO watcher", "GRANT SELECT ON rogue.state TO watcher",
		"UPDATE whoami SET who = 'the rogue'",
		"ALTER ROLE watcher SET search_path = rogue, pg_catalog, public")

	dsn := strings.Replace(withHosts(t, c.DSN(), n1.Addr(), n2.Addr()), "postgres:pgxha@", "watcher:w@", 1)
	d := newSetDiscoverer(nodesOf(n1, n2)...)
	m := newManager(t, ctx, withParams(dsn, "hasql_check_interval", "100ms"), hasql.WithDiscoverer(d))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	d.set(nodesOf(n1, n2, rogue)...)
	waitUntil(t, ctx, "the rogue detached", func() bool { return statusAt(m, rogue).Detached != "" })
	st := statusAt(m, rogue)
	t.Logf("rogue: role %s, detached %q; n2: %s", st.Role, st.Detached, statusAt(m, n2).Role)
	assert.False(t, st.Role.IsReplica(), "the rogue, which nothing vouches for, serves reads")
	assert.True(t, statusAt(m, n2).Role.IsReplica(), "n2 serves reads")
	for range 20 {
		var who string
		require.NoError(t, m.Replica().QueryRow(ctx, "SELECT who FROM whoami").Scan(&who))
		assert.Equal(t, "the cluster", who, "a read answered by the rogue")
	}
}
