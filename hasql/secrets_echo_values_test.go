package hasql_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A rogue that got the password in clear text (sslmode=disable) and
// answers the checks as a master whose cluster_name is the password: the
// password must reach no NodeStatus and no log line.
func TestRogueEchoesPasswordAsClusterName(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const secret = "s3cr3t-Pa55word"
	var got, checked atomic.Int64
	ln := cleartextRogue(t, &got, func(be *pgproto3.Backend, pw string) {
		if welcome(be) != nil {
			return
		}
		serveSimple(be, func(be *pgproto3.Backend, sql string) bool {
			switch {
			case strings.Contains(sql, "pg_control_system()), pg_postmaster_start_time()"):
				sendServer(be, uint64(7000000000000000001), pw)
			case strings.Contains(sql, "string_agg"), strings.Contains(sql, "synchronous_standby_names"):
				checked.Add(1)
				sendMasterCheck(be)
			default:
				sendRow(be, []uint32{oidInt4}, []any{1})
			}
			return true
		})
	})
	m, logs := echoManager(t, ctx, secret, ln.Addr().String())
	waitUntil(t, ctx, "the rogue checked", func() bool {
		for _, st := range m.Nodes() {
			if st.Addr == ln.Addr().String() && checked.Load() > 2 && !st.LastCheck.IsZero() {
				return true
			}
		}
		return false
	})
	status := fmt.Sprintf("%+v", m.Nodes())
	m.Close()
	t.Logf("nodes: %s", status)
	assert.NotContains(t, status, secret, "the password in NodeStatus")
	assert.NotContains(t, logs.String(), secret, "the password in the logs")
}

// The same rogue answers the same-server look of a pool connection
// (ValidateConnect) with the password for its start time: it reaches no
// acquire error, NodeStatus or log line.
func TestRogueEchoesPasswordAsStartTime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const secret = "s3cr3t-Pa55word"
	var got, checked atomic.Int64
	ln := cleartextRogue(t, &got, func(be *pgproto3.Backend, pw string) {
		if welcome(be) != nil {
			return
		}
		failed, ext := false, false
		for {
			m, err := be.Receive()
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *pgproto3.Parse:
				if strings.Contains(m.Query, "extract(epoch FROM pg_postmaster_start_time())") {
					ext = true
					be.Send(&pgproto3.ParseComplete{})
				} else {
					failed = true
				}
			case *pgproto3.Bind:
				if ext {
					be.Send(&pgproto3.BindComplete{})
				}
			case *pgproto3.Describe:
				if ext {
					be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("c0"), DataTypeOID: oidInt8, DataTypeSize: -1, TypeModifier: -1}}})
				}
			case *pgproto3.Execute:
				if ext {
					be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte(pw)}})
					be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
					ext = false
				}
			case *pgproto3.Sync:
				if failed {
					be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "26000", Message: "prepared statement does not exist"})
					failed = false
				}
				be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				if be.Flush() != nil {
					return
				}
			case *pgproto3.Query:
				switch {
				case strings.Contains(m.String, "pg_control_system()), pg_postmaster_start_time()"):
					sendServer(be, uint64(7000000000000000001), "rogue")
				case strings.Contains(m.String, "string_agg"), strings.Contains(m.String, "synchronous_standby_names"):
					checked.Add(1)
					sendMasterCheck(be)
				default:
					sendRow(be, []uint32{oidInt4}, []any{1})
				}
				be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				if be.Flush() != nil {
					return
				}
			case *pgproto3.Terminate:
				return
			}
		}
	})
	m, logs := echoManager(t, ctx, secret, ln.Addr().String())
	waitUntil(t, ctx, "the rogue checked", func() bool {
		for _, st := range m.Nodes() {
			if st.Addr == ln.Addr().String() && checked.Load() > 2 && !st.LastCheck.IsZero() {
				return true
			}
		}
		return false
	})
	actx, acancel := context.WithTimeout(ctx, 2*time.Second)
	conn, acqErr := m.AcquireMaster(actx)
	acancel()
	if conn != nil {
		conn.Release()
	}
	t.Logf("acquire: %v", acqErr)
	require.Error(t, acqErr)
	assert.Empty(t, leaks(acqErr, secret, 0), "the password in the acquire's error: %v", acqErr)
	status := fmt.Sprintf("%+v", m.Nodes())
	m.Close()
	t.Logf("nodes: %s", status)
	assert.NotContains(t, status, secret, "the password in NodeStatus")
	assert.NotContains(t, logs.String(), secret, "the password in the logs")
}
