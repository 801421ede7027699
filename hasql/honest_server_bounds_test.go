package hasql_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// TestHonestServerStaysWithinTheBounds: a real server (PostgreSQL 15 here)
// reports GUC_REPORT parameters again whenever a reload changes them; the
// check connection, read by a serverReader for its life, sees hundreds of
// ParameterStatus messages of the same names and must stay the same
// backend. A Listener gets the largest notification PostgreSQL sends
// (7999 bytes) on a channel of the longest name (63 bytes) under its
// 64 KiB bound.
func TestHonestServerStaysWithinTheBounds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	n1 := c.Nodes()[0]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "20ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))

	conn, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close(ctx)
	checkPID := func() (pids []int32) {
		rows, err := conn.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgxha-check' ORDER BY pid")
		require.NoError(t, err)
		defer rows.Close()
		for rows.Next() {
			var p int32
			require.NoError(t, rows.Scan(&p))
			pids = append(pids, p)
		}
		return pids
	}
	before := checkPID()
	require.NotEmpty(t, before)

	ch := strings.Repeat("c", 63)
	l, err := m.Listen(ctx, ch)
	require.NoError(t, err)
	defer l.Close()
	payload := strings.Repeat("é", 3999) + "x" // 7999 bytes in UTF8
	_, err = conn.Exec(ctx, "SELECT pg_notify($1, $2)", ch, payload)
	require.NoError(t, err)
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	got, err := l.Receive(rctx)
	rcancel()
	require.NoError(t, err)
	require.Equal(t, payload, got.Payload)

	zones := []string{"UTC", "Europe/Berlin"}
	styles := []string{"ISO, MDY", "ISO, DMY"}
	for i := range 300 {
		_, err := conn.Exec(ctx, "ALTER SYSTEM SET timezone = '"+zones[i%2]+"'")
		require.NoError(t, err)
		_, err = conn.Exec(ctx, "ALTER SYSTEM SET datestyle = '"+styles[i%2]+"'")
		require.NoError(t, err)
		_, err = conn.Exec(ctx, "SELECT pg_reload_conf()")
		require.NoError(t, err)
		at := statusAt(m, n1).LastCheck
		waitUntil(t, ctx, "two checks after the reload", func() bool { return statusAt(m, n1).LastCheck.After(at.Add(25 * time.Millisecond)) })
	}
	st := statusAt(m, n1)
	require.Equal(t, hasql.RoleMaster, st.Role)
	require.Nil(t, st.LastError)
	require.Equal(t, before, checkPID(), "the check connection was remade during parameter changes of the same names")
	_ = testcluster.Options{}
}
