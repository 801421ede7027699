package hasql_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"

	"github.com/pgxha/pgxha/hasql"
)

// TestPasswordEchoedAcrossTheCutIsCleared: a server that got the password
// in clear text says it back in an error placed so that the cut of a
// server's text (2 KiB) falls on the password's last byte. What is kept
// (NodeStatus.LastError, an acquire's *hasql.AuthError, the log) must not
// hold the password, nor all of it but that byte: it is cleared before it
// is cut.
func TestPasswordEchoedAcrossTheCutIsCleared(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const secret = "s3cr3t-Pa55word-0123456789"
	const maxServerText = 2 << 10
	prefix := secret[:len(secret)-1]
	var got atomic.Int64
	ln := cleartextRogue(t, &got, func(be *pgproto3.Backend, pw string) {
		pad := strings.Repeat("a", maxServerText-(len(pw)-1))
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: pad + pw + strings.Repeat("b", 200)})
		_ = be.Flush()
	})
	m, logs := echoManager(t, ctx, secret, ln.Addr().String())
	var lastErr error
	waitUntil(t, ctx, "the server's error as the node's", func() bool {
		for _, st := range m.Nodes() {
			if st.Addr == ln.Addr().String() && st.LastError != nil && got.Load() > 0 && strings.Contains(st.LastError.Error(), "aaaa") {
				lastErr = st.LastError
				return true
			}
		}
		return false
	})
	var acqErr error
	waitUntil(t, ctx, "an acquire's error naming the refused credentials", func() bool {
		short, c := context.WithTimeout(ctx, 300*time.Millisecond)
		_, acqErr = m.AcquireReplica(short, hasql.FallbackToMaster())
		c()
		var ae *hasql.AuthError
		return errors.As(acqErr, &ae)
	})
	m.Close()
	assert.Empty(t, leaks(lastErr, prefix, 0), "the password but its last byte in NodeStatus.LastError")
	assert.Empty(t, leaks(acqErr, prefix, 0), "the password but its last byte in an acquire's error")
	assert.NotContains(t, logs.String(), prefix, "the password but its last byte in the log")
}

// TestPasswordEscapedInACheckErrorIsCleared: a server that got the
// password in clear text answers a check with it as its WAL position. The
// check's error quotes the value (%q), which escapes the password's '"'
// and '\': NodeStatus.LastError, the log and HealthHandler's answer must
// hold it in no form.
func TestPasswordEscapedInACheckErrorIsCleared(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const secret = `s3cr3t"Pa55\word`
	var got, checked atomic.Int64
	ln := cleartextRogue(t, &got, func(be *pgproto3.Backend, pw string) {
		if welcome(be) != nil {
			return
		}
		serveSimple(be, func(be *pgproto3.Backend, sql string) bool {
			switch {
			case strings.Contains(sql, "pg_control_system()), pg_postmaster_start_time()"):
				sendServer(be, uint64(7000000000000000001), "rogue")
			case strings.Contains(sql, "string_agg"), strings.Contains(sql, "synchronous_standby_names"):
				checked.Add(1)
				sendRow(be,
					[]uint32{oidBool, oidBool, oidText, oidText, oidTimestamptz, oidBool, oidTimestamptz, oidInt8, oidTimestamptz, oidText, oidInt4, oidText, oidText},
					[]any{"f", "f", pw, nil, nil, "f", nil, 1, rogueStart, nil, nil, nil, ""})
			default:
				sendRow(be, []uint32{oidInt4}, []any{1})
			}
			return true
		})
	})
	m, logs := echoManager(t, ctx, secret, ln.Addr().String())
	var lastErr error
	waitUntil(t, ctx, "the check's error as the node's", func() bool {
		for _, st := range m.Nodes() {
			if st.Addr == ln.Addr().String() && st.LastError != nil && checked.Load() > 0 && strings.Contains(st.LastError.Error(), "LSN") {
				lastErr = st.LastError
				return true
			}
		}
		return false
	})
	rec := httptest.NewRecorder()
	hasql.HealthHandler(m).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	m.Close()
	quoted := strings.Trim(strconv.Quote(secret), `"`)
	assert.NotContains(t, lastErr.Error(), quoted, "the password, escaped, in NodeStatus.LastError")
	assert.NotContains(t, lastErr.Error(), "Pa55", "the password, in some form, in NodeStatus.LastError")
	assert.NotContains(t, rec.Body.String(), "Pa55", "the password, in some form, in HealthHandler's answer")
	assert.NotContains(t, logs.String(), "Pa55", "the password, in some form, in the log")
}
