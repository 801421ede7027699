package hasql

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgxha/pgxha/checker"
)

// scriptedNodes makes a Manager of two nodes whose connections never get
// through, stops their check loops before any check ended, and returns
// them: the test reports what their checks found itself (report), as the
// loops would.
func scriptedNodes(t *testing.T) (*Manager, *node, *node) {
	t.Helper()
	hang := func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	m, err := New(ctx, "postgres://u@127.0.0.1:1,127.0.0.1:2/db?hasql_check_timeout=1m", func(c *Config) error {
		c.ConfigureNode = func(_ NodeConfig, pc *pgxpool.Config) error {
			pc.ConnConfig.DialFunc = hang
			return nil
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	m.mu.Lock()
	nodes := slices.Clone(m.nodes)
	m.mu.Unlock()
	for _, n := range nodes {
		n.cancel()
		<-n.done
	}
	return m, nodes[0], nodes[1]
}

// A Manager started while no master answers (the cluster's system
// identifier is not learned yet) serves plain reads from every replica of
// the set, and a server of another cluster listed by mistake is one of
// them. A read after a token must still never be served by it: a server
// of another system identifier than the token's does not have the write,
// however far its WAL numbers run. Before, After(tok) took the foreign
// replica, past the token's position by the numbers of another history.
func TestAfterNeverTakesAReplicaOfAnotherSystem(t *testing.T) {
	m, n1, n2 := scriptedNodes(t)
	const ours, theirs = 7000000000000000001, 7000000000000000002
	res := func(sys uint64, lsn LSN, name string, start time.Time) checker.Result {
		return checker.Result{InRecovery: true, ReadOnly: true, Timeline: 1, ReceiveTimeline: 1, LSN: lsn, ReceiveLSN: lsn,
			SystemID: sys, StartTime: start, Name: name}
	}
	now := time.Now()
	m.report(n1, res(ours, 0x5000, "n1", now.Add(-time.Hour)), now, time.Millisecond, nil) // ours, behind the write
	m.report(n2, res(theirs, 0x9000, "n2", now.Add(-2*time.Hour)), now, time.Millisecond, nil)
	for _, st := range m.Nodes() {
		t.Logf("%s: role %s, detached %q", st.Addr, st.Role, st.Detached)
	}

	tok := Token{LSN: 0x7000, Timeline: 1, SystemID: ours}
	var o replicaOptions
	applyOptions(&o, []ReplicaOption{After(tok)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := m.resolveAfter(ctx, &o); err != nil {
		t.Fatalf("resolving our own token: %v", err)
	}
	set, err := m.candidates(m.snap.Load(), targetReplica, &o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(set.nodes, n2) {
		t.Fatalf("a read after a token of system %d may be served by %s, a server of system %d (past the position by another history's numbers)",
			uint64(ours), n2.cfg.Addr, uint64(theirs))
	}
	// The probe's set (replicas asked how far they replayed) leaves it out too.
	w := newMinLSNWait(&o)
	probe, _ := m.candidates(m.snap.Load(), targetReplica, &w.others, nil)
	if slices.Contains(probe.nodes, n2) {
		t.Fatalf("%s, a server of system %d, is asked how far it replayed for a token of system %d", n2.cfg.Addr, uint64(theirs), uint64(ours))
	}
}
