package hasql_test

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/checker"
	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// traceEntry is what the test reads of a decision trace's line.
type traceEntry struct {
	Kind   string          `json:"kind"`
	At     time.Time       `json:"at"`
	Began  time.Time       `json:"began"`
	Result *checker.Result `json:"result"`
}

func checksIn(trace string) []traceEntry {
	var out []traceEntry
	sc := bufio.NewScanner(strings.NewReader(trace))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e traceEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Kind == "ok" && e.Result != nil {
			out = append(out, e)
		}
	}
	return out
}

// In the steady state the master's checks reuse its walsenders; while a
// replica is down every master check reads them (it may come back any
// moment), and once it is back it is listed and serves reads.
func TestMasterWalsendersReadWhenAReplicaChanges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n3 := c.Nodes()[2]
	var buf syncBuffer
	m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_interval", "100ms"), hasql.WithLogger(quiet), hasql.WithDecisionTrace(&buf))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 2))
	// masterChecks returns the master's checks that began after after,
	// and how many of them reused the walsenders.
	masterChecks := func(after time.Time) (all, cached int) {
		for _, e := range checksIn(buf.String()) {
			if !e.Result.InRecovery && e.Began.After(after) {
				all++
				if e.Result.ReplicasCached {
					cached++
				}
			}
		}
		return all, cached
	}
	waitUntil(t, ctx, "master checks that reuse the walsenders", func() bool {
		_, cached := masterChecks(time.Time{})
		return cached >= 3
	})

	require.NoError(t, n3.Kill())
	waitUntil(t, ctx, "n3 down", func() bool { return !statusAt(m, n3).Up })
	down := time.Now()
	waitUntil(t, ctx, "three master checks while n3 is down", func() bool {
		all, _ := masterChecks(down)
		return all >= 3
	})
	_, cached := masterChecks(down)
	assert.Zero(t, cached, "master checks reused the walsenders while a replica was down")
	require.NoError(t, n3.Start())
	waitUntil(t, ctx, "n3 a replica again", func() bool { return statusAt(m, n3).Role.IsReplica() })
}
