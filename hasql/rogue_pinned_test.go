package hasql_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestPinnedSystemIDHiddenByRogue: the system identifier is pinned
// (hasql_system_identifier). A host of the connection string is taken over
// by a server that answers every check as a writable master whose
// system_identifier is NULL. docs/security.md: "Pin the cluster with
// hasql_system_identifier ... and a server of any other cluster is
// foreign, whatever it claims". It must take no writes: not while the
// master runs (a split brain refuses writes), not when the master dies.
func TestPinnedSystemIDHiddenByRogue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	var sysid uint64
	conn, err := c.Master().Conn(ctx)
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(ctx, "SELECT system_identifier FROM pg_control_system()").Scan(&sysid))
	conn.Close(ctx)

	noNames := func(be *pgproto3.Backend) {
		be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
			{Name: []byte("pid"), DataTypeOID: oidInt4, DataTypeSize: 4, TypeModifier: -1},
			{Name: []byte("app"), DataTypeOID: oidText, DataTypeSize: -1, TypeModifier: -1},
			{Name: []byte("addr"), DataTypeOID: oidText, DataTypeSize: -1, TypeModifier: -1},
		}})
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 0")})
	}
	rogue := newQueryPG(t, func(be *pgproto3.Backend, sql string) bool {
		if strings.Contains(sql, "pg_control_system()), pg_postmaster_start_time()") {
			sendServer(be, nil, "rogue")
			return true
		}
		switch {
		case strings.Contains(sql, "pg_stat_get_activity"):
			noNames(be)
		case strings.Contains(sql, "string_agg"), strings.Contains(sql, "synchronous_standby_names"):
			sendMasterCheck(be)
		default:
			sendRow(be, []uint32{oidInt4}, []any{1})
		}
		return true
	})
	addrs := []string{}
	for _, n := range c.Nodes() {
		addrs = append(addrs, n.Addr())
	}
	addrs = append(addrs, rogue.Addr())
	dsn := c.DSNFor(addrs...) + "&hasql_system_identifier=" + strconv.FormatUint(sysid, 10)
	if !strings.Contains(dsn, "?") {
		dsn = strings.Replace(dsn, "&hasql_", "?hasql_", 1)
	}
	m := newManager(t, ctx, dsn)
	_, rport, _ := strings.Cut(rogue.Addr(), ":")

	// While the master runs: writes go to it.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	pc, err := m.AcquireMaster(wctx)
	wcancel()
	if assert.NoError(t, err, "writes refused while the master runs and a server that hides its system identifier answers") {
		assert.NotEqual(t, rport, strconv.Itoa(int(pc.Conn().Config().Port)), "the write went to the rogue")
		pc.Release()
	}
	for _, st := range m.Nodes() {
		t.Logf("%s role %v split %v err %v", st.Addr, st.Role, st.SplitBrain, st.LastError)
	}

	// The master dies: no write may go to the rogue.
	require.NoError(t, c.Master().Kill())
	deadline := time.Now().Add(5 * time.Second)
	rogueRole := func() hasql.Role {
		for _, st := range m.Nodes() {
			if st.Addr == rogue.Addr() {
				return st.Role
			}
		}
		return hasql.RoleUnknown
	}
	waitUntil(t, ctx, "a few seconds with the master dead", func() bool {
		if r := rogueRole(); r == hasql.RoleMaster {
			t.Errorf("with the system identifier pinned to %d, a server that does not say its own is the master: writes are routed to it", sysid)
			return true
		}
		return !time.Now().Before(deadline)
	})
	for _, st := range m.Nodes() {
		t.Logf("after the kill: %s role %v err %v", st.Addr, st.Role, st.LastError)
	}
}
