package hasql_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A ConnConfig.BuildFrontend of the user's is handed the connection as
// pgx hands it (a net.Conn), not a reader of the messages it sends.
func TestUserFrontendGetsTheConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	var mu sync.Mutex
	var writers []string
	m, err := hasql.New(ctx, c.DSN(), hasql.WithConfigureNode(func(_ hasql.NodeConfig, cfg *pgxpool.Config) error {
		cfg.ConnConfig.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
			_, isConn := w.(net.Conn)
			mu.Lock()
			writers = append(writers, fmt.Sprintf("%T net.Conn=%v", w, isConn))
			mu.Unlock()
			return pgproto3.NewFrontend(r, w)
		}
		return nil
	}))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 0))
	_, err = m.Master().Exec(ctx, "SELECT 1")
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, writers)
	for _, w := range writers {
		assert.Regexp(t, `^\*hasql\.trackedConn net\.Conn=true$`, w)
	}
}
