package hasql_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestRogueRestartCopyLeavesTheMaster: a discovered server nothing
// vouches for answers the checks as a copy of the master (its system
// identifier, postmaster start time, cluster_name and timeline: plain SQL
// to read), then lets a check time out and answers the next one, at once,
// as the same server "restarted" (another start time), and again. The real
// master must not be taken for an unconfirmed restart (losing the role
// until its next check, its pool reset, a failover logged and counted):
// the rogue changes nothing of the master.
func TestRogueRestartCopyLeavesTheMaster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	var sysid uint64
	var startT time.Time
	var name string
	var tl int
	conn, err := c.Master().Conn(ctx)
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(ctx, `SELECT system_identifier, pg_postmaster_start_time(), current_setting('cluster_name'),
		(SELECT timeline_id FROM pg_control_checkpoint()) FROM pg_control_system()`).Scan(&sysid, &startT, &name, &tl))
	const layout = "2006-01-02 15:04:05.999999-07"
	start := startT.UTC().Format(layout)
	conn.Close(ctx)
	require.Equal(t, 1, tl, "setup: the master's timeline")

	const checkTimeout = 300 * time.Millisecond
	var mu sync.Mutex
	mode, lastIdentity, cur, k := "copy", "", start, 0
	noNames := func(be *pgproto3.Backend) {
		be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
			{Name: []byte("pid"), DataTypeOID: oidInt4, DataTypeSize: 4, TypeModifier: -1},
			{Name: []byte("app"), DataTypeOID: oidText, DataTypeSize: -1, TypeModifier: -1},
			{Name: []byte("addr"), DataTypeOID: oidText, DataTypeSize: -1, TypeModifier: -1},
		}})
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 0")})
	}
	checkRow := func(be *pgproto3.Backend, st string) {
		sendRow(be,
			[]uint32{oidBool, oidBool, oidText, oidText, oidTimestamptz, oidBool, oidTimestamptz, oidInt8, oidTimestamptz, oidText, oidInt4, oidText, oidText},
			[]any{"f", "f", "0/3000000", nil, nil, "f", nil, 1, st, nil, nil, nil, ""})
	}
	rogue := newQueryPG(t, func(be *pgproto3.Backend, sql string) bool {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.Contains(sql, "pg_control_system()), pg_postmaster_start_time()"):
			if mode == "copy" {
				cur = start
			}
			lastIdentity = cur
			sendRow(be, []uint32{oidInt8, oidTimestamptz, oidText, oidInt8}, []any{sysid, cur, name, 16 << 20})
		case strings.Contains(sql, "pg_stat_get_activity"):
			noNames(be)
		case strings.Contains(sql, "string_agg"), strings.Contains(sql, "synchronous_standby_names"):
			switch mode {
			case "copy":
				checkRow(be, start)
				if lastIdentity == start {
					mode = "stall" // that check saw an exact copy of the master
				}
			case "stall":
				mode, k = "restarted", k+1
				cur = startT.Add(time.Duration(k) * time.Second).UTC().Format(layout) // another start time
				mu.Unlock()
				time.Sleep(checkTimeout + 200*time.Millisecond)
				mu.Lock()
				return false
			case "restarted":
				checkRow(be, cur)
				if lastIdentity == cur {
					mode = "copy"
				}
			}
		default:
			sendRow(be, []uint32{oidInt4}, []any{1})
		}
		return true
	})
	logs := &syncBuffer{}
	m := newManager(t, ctx, c.DSN()+"&hasql_check_interval=100ms&hasql_check_timeout=300ms",
		hasql.WithLogger(slog.New(slog.NewTextHandler(logs, nil))),
		hasql.WithDiscoverer(newSetDiscoverer(discoveryNodes(c, rogue.Addr())...)))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	// Rounds of copy, stall and "restart": each could take the role away.
	var rounds int
	waitUntil(t, ctx, "eight rounds of the rogue", func() bool {
		mu.Lock()
		defer mu.Unlock()
		rounds = k
		return rounds >= 8
	})
	flaps := strings.Count(logs.String(), `msg="pgxha: new master"`)
	for _, st := range m.Nodes() {
		t.Logf("%s role %v", st.Addr, st.Role)
	}
	shown := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		if shown < 4 && (strings.Contains(line, "new master") || strings.Contains(line, "role changed")) {
			t.Log(line)
			shown++
		}
	}
	t.Logf("rogue rounds %d; 'new master' logged %d times", rounds, flaps)
	assert.Zero(t, flaps, "a server nothing vouches for took the master role away from the real master")
}

func discoveryNodes(c *testcluster.Cluster, extra ...string) []discovery.Node {
	var out []discovery.Node
	for _, n := range c.Nodes() {
		out = append(out, discovery.Node{Addr: n.Addr()})
	}
	for _, a := range extra {
		out = append(out, discovery.Node{Addr: a})
	}
	return out
}
