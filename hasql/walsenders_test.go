package hasql_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
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

// masterChecksIn returns the checks of a writable node in a decision
// trace that began after after.
func masterChecksIn(trace string, after time.Time) (out []traceEntry) {
	for _, e := range checksIn(trace) {
		if !e.Result.InRecovery && e.Began.After(after) {
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

// TestStrangerTakesSyncAtALongInterval: a standby outside the node set
// (pg_receivewal --synchronous, listed first in synchronous_standby_names)
// takes the sync role from n2 just after a check of the master read its
// walsenders; no check of a node of the set shows it. At a check interval
// of 1.9 s, the master's next check, which would find that read more than 2
// s old, reads them again: after it n2 is no longer sync. (Before, that
// check reused the read, and n2 stood as sync for two intervals.)
func TestStrangerTakesSyncAtALongInterval(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin, err := testcluster.FindBinDir()
	require.NoError(t, err)
	c := testcluster.New(t, testcluster.Options{Replicas: 1, SyncReplicas: 1})
	n1, n2 := c.Nodes()[0], c.Nodes()[1]
	execOn(t, ctx, n1, "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (rw, n2)'", "SELECT pg_reload_conf()")
	mc, err := n1.Conn(ctx)
	require.NoError(t, err)
	defer mc.Close(ctx)
	syncName := func() string {
		var s string
		require.NoError(t, mc.QueryRow(ctx, "SELECT coalesce((SELECT application_name FROM pg_stat_replication WHERE sync_state = 'sync'), '')").Scan(&s))
		return s
	}
	waitUntil(t, ctx, "n2 sync", func() bool { return syncName() == "n2" })

	var trace syncBuffer
	m, err := hasql.New(ctx, withParams(c.DSN(), "hasql_check_interval", "1900ms"), hasql.WithLogger(quiet), hasql.WithDecisionTrace(&trace))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	waitUntil(t, ctx, "n2 sync in the Manager", func() bool { return statusAt(m, n2).Role == hasql.RoleSyncReplica })
	// A check of the master that read the walsenders in the steady state
	// (the one before it began more than a second earlier: the fast checks
	// of the start are over).
	var read traceEntry
	waitUntil(t, ctx, "a master check that reads the walsenders, in the steady state", func() bool {
		es := masterChecksIn(trace.String(), time.Time{})
		for i := len(es) - 1; i > 0; i-- {
			if !es[i].Result.ReplicasCached && es[i].Began.Sub(es[i-1].Began) > time.Second {
				read = es[i]
				return true
			}
		}
		return false
	})

	dsn := n1.DirectDSN()
	if strings.Contains(dsn, "?") {
		dsn += "&application_name=rw"
	} else {
		dsn += "?application_name=rw"
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "pg_receivewal"), "--synchronous", "--no-loop", "-D", t.TempDir(), "-d", dsn)
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	waitUntil(t, ctx, "rw sync", func() bool { return syncName() == "rw" })
	took := time.Now()

	// The master's first check that began after rw took the role.
	var next traceEntry
	waitUntil(t, ctx, "the master's next check", func() bool {
		for _, e := range masterChecksIn(trace.String(), time.Time{}) {
			if e.Began.After(took) {
				next = e
				return true
			}
		}
		return false
	})
	waitUntil(t, ctx, "its decisions applied", func() bool { return !statusAt(m, n1).LastCheck.Before(next.At) })
	t.Logf("read at %s, rw sync at %s, the next master check at %s (reused: %v)",
		read.Began.Format("15:04:05.000"), took.Format("15:04:05.000"), next.Began.Format("15:04:05.000"), next.Result.ReplicasCached)
	assert.False(t, next.Result.ReplicasCached, "the master's check reused a read it found %s old", next.Began.Sub(read.Began))
	assert.NotEqual(t, hasql.RoleSyncReplica, statusAt(m, n2).Role, "n2 after the master's next check")
}
