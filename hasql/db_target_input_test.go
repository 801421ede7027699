package hasql_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
)

// TestDBUnknownTargetIsRefused: a Target that is none of the four
// constants is bad input: DB's connections say so, rather than going to
// the replicas as if TargetReplica had been asked for.
func TestDBUnknownTargetIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := hasql.New(ctx, "postgres://u@127.0.0.1:1,127.0.0.1:2/db?hasql_check_timeout=200ms&hasql_acquire_timeout=300ms",
		hasql.WithLogger(quiet))
	require.NoError(t, err)
	defer m.Close()
	db := m.DB(hasql.Target(7))
	defer db.Close()
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	defer pcancel()
	err = db.PingContext(pctx)
	require.Error(t, err)
	t.Logf("DB(Target(7)).Ping: %v", err)
	if errors.Is(err, hasql.ErrNoReplica) || !strings.Contains(err.Error(), "Target") {
		t.Fatalf("DB(Target(7)) was taken for TargetReplica; its error does not name the bad target: %v", err)
	}
}
