package hasql_test

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"
)

// queryPG is a lying PostgreSQL server that completes a connection without
// asking for a password (AuthenticationOk), refuses prepared statements
// (26000, as a pooler in transaction mode does: pgxha's checks then run
// with the simple protocol) and answers each simple query with what
// answer writes. t's cleanup stops it.
type queryPG struct {
	ln      net.Listener
	wg      sync.WaitGroup
	queries atomic.Int64
}

// sqlAnswer writes the answer to one simple query (RowDescription,
// DataRows, CommandComplete; ReadyForQuery is sent after it). It returns
// false to end the session.
type sqlAnswer func(be *pgproto3.Backend, sql string) bool

func newQueryPG(t *testing.T, answer sqlAnswer) *queryPG {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	q := &queryPG{ln: ln}
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			q.wg.Add(1)
			go func() {
				defer q.wg.Done()
				defer c.Close()
				q.session(c, answer)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); q.wg.Wait() })
	return q
}

func (q *queryPG) Addr() string { return q.ln.Addr().String() }

func (q *queryPG) session(c net.Conn, answer sqlAnswer) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	be := pgproto3.NewBackend(c, c)
	be.SetMaxBodyLen(64 << 20)
	for range 3 {
		m, err := be.ReceiveStartupMessage()
		if err != nil {
			return
		}
		switch m.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := c.Write([]byte{'N'}); err != nil {
				return
			}
			continue
		case *pgproto3.StartupMessage:
		default:
			return // a cancel request
		}
		if welcome(be) != nil {
			return
		}
		break
	}
	serveSimple(be, func(be *pgproto3.Backend, sql string) bool {
		q.queries.Add(1)
		return answer(be, sql)
	})
}

// welcome ends a fake server's startup: authenticated, the parameters pgx
// reads, ready for a query.
func welcome(be *pgproto3.Backend) error {
	be.Send(&pgproto3.AuthenticationOk{})
	for k, v := range map[string]string{"server_version": "16.4", "standard_conforming_strings": "on", "client_encoding": "UTF8",
		"DateStyle": "ISO, MDY", "integer_datetimes": "on", "TimeZone": "UTC"} {
		be.Send(&pgproto3.ParameterStatus{Name: k, Value: v})
	}
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return be.Flush()
}

// serveSimple serves a session after welcome until the client leaves:
// prepared statements are refused (26000, as a pooler in transaction mode
// refuses them), each simple query is answered by answer.
func serveSimple(be *pgproto3.Backend, answer sqlAnswer) {
	failed := false
	for {
		m, err := be.Receive()
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *pgproto3.Parse:
			failed = true
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
			if !answer(be, m.String) {
				return
			}
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if be.Flush() != nil {
				return
			}
		case *pgproto3.Terminate:
			return
		}
	}
}

// Type OIDs of the columns the rogue sends (text format).
const (
	oidBool        = 16
	oidInt8        = 20
	oidInt4        = 23
	oidText        = 25
	oidTimestamptz = 1184
)

// sendRow sends a RowDescription of oids and one DataRow of vals (nil:
// NULL) and CommandComplete.
func sendRow(be *pgproto3.Backend, oids []uint32, vals []any) {
	fields := make([]pgproto3.FieldDescription, len(oids))
	for i, o := range oids {
		fields[i] = pgproto3.FieldDescription{Name: []byte(fmt.Sprintf("c%d", i)), DataTypeOID: o, DataTypeSize: -1, TypeModifier: -1}
	}
	be.Send(&pgproto3.RowDescription{Fields: fields})
	row := make([][]byte, len(vals))
	for i, v := range vals {
		if v != nil {
			row[i] = []byte(fmt.Sprint(v))
		}
	}
	be.Send(&pgproto3.DataRow{Values: row})
	be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
}

const rogueStart = "2026-01-01 00:00:00+00"

// masterAnswers answers pgxha's check statements as a master (system
// identifier sysid) whose walsender list is repls, and walsenderSQL with
// names (the rows it sends).
func masterAnswers(sysid uint64, repls func() string, names func(be *pgproto3.Backend)) sqlAnswer {
	return func(be *pgproto3.Backend, sql string) bool {
		switch {
		case strings.Contains(sql, "pg_control_system()), pg_postmaster_start_time()"):
			sendServer(be, sysid, "rogue")
		case strings.Contains(sql, "pg_stat_get_activity"):
			names(be)
		case strings.Contains(sql, "string_agg"), strings.Contains(sql, "synchronous_standby_names"):
			sendRow(be,
				[]uint32{oidBool, oidBool, oidText, oidText, oidTimestamptz, oidBool, oidTimestamptz, oidInt8, oidTimestamptz, oidText, oidInt4, oidText, oidText},
				[]any{"f", "f", "0/3000000", nil, nil, "f", nil, 1, rogueStart, nil, nil, repls(), ""})
		default:
			sendRow(be, []uint32{oidInt4}, []any{1})
		}
		return true
	}
}

// sendServer answers the checker's first statement on a connection (the
// server's system identifier, start time, name and WAL segment size) as a
// server started at rogueStart.
func sendServer(be *pgproto3.Backend, sysid any, name string) {
	sendRow(be, []uint32{oidInt8, oidTimestamptz, oidText, oidInt8}, []any{sysid, rogueStart, name, 16 << 20})
}

// sendMasterCheck answers a check as a master on timeline 1 at 0/3000000
// with no walsender.
func sendMasterCheck(be *pgproto3.Backend) {
	sendRow(be,
		[]uint32{oidBool, oidBool, oidText, oidText, oidTimestamptz, oidBool, oidTimestamptz, oidInt8, oidTimestamptz, oidText, oidInt4, oidText, oidText},
		[]any{"f", "f", "0/3000000", nil, nil, "f", nil, 1, rogueStart, nil, nil, nil, ""})
}
