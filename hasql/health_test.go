package hasql_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// HealthHandler answers 200 while there is a master, 503 once there is
// none, and 200 again with HealthServesReads while a replica serves reads;
// its JSON describes every node and never shows the password.
func TestHealthHandler(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const password = "Health-Secret-42"
	c := testcluster.New(t, testcluster.Options{Replicas: 1, Password: password})
	n1 := c.Nodes()[0]
	m := newManager(t, ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"))
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	writes := hasql.HealthHandler(m)
	reads := hasql.HealthHandler(m, hasql.HealthServesReads())

	get := func(h http.Handler) (int, hasql.Health, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		var body hasql.Health
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body), rec.Body.String())
		assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
		assert.NotContains(t, rec.Body.String(), password)
		return rec.Code, body, rec.Body.String()
	}

	code, body, text := get(writes)
	require.Equal(t, http.StatusOK, code, text)
	assert.Equal(t, "ok", body.Status)
	assert.True(t, body.Writes && body.Reads)
	assert.Equal(t, n1.Addr(), body.Master)
	require.Len(t, body.Nodes, 2)
	assert.Equal(t, "master", body.Nodes[0].Role)
	assert.Equal(t, "async", body.Nodes[1].Role)
	assert.NotNil(t, body.Nodes[1].LagBytes, "a replica's lag is shown once known")
	assert.NotEmpty(t, body.Nodes[0].LSN)

	rec := httptest.NewRecorder()
	writes.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/healthz", nil))
	assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)

	require.NoError(t, n1.Kill())
	require.Eventually(t, func() bool {
		code, _, _ := get(writes)
		return code == http.StatusServiceUnavailable
	}, 30*time.Second, 5*time.Millisecond, "503 once the master is gone")
	code, body, text = get(writes)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "unavailable", body.Status)
	assert.Empty(t, body.Master)
	assert.False(t, body.Nodes[0].Up)
	assert.NotEmpty(t, body.Nodes[0].LastError, "the dead master's error is shown")
	assert.False(t, strings.Contains(text, password))

	code, body, text = get(reads)
	assert.Equal(t, http.StatusOK, code, "reads are served by the replica: %s", text)
	assert.True(t, body.Reads)
	assert.False(t, body.Writes)
}
