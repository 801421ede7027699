package hasql_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
)

// churnDiscoverer reports a new set every few milliseconds until its
// context ends: nodes join and leave all the time.
type churnDiscoverer struct{}

func (churnDiscoverer) Run(ctx context.Context, update func(discovery.State)) error {
	for i := 0; ; i++ {
		nodes := []discovery.Node{{Addr: "127.0.0.1:1"}}
		for k := range i % 4 {
			nodes = append(nodes, discovery.Node{Addr: fmt.Sprintf("127.0.0.1:%d", 2+(i+k)%7)})
		}
		update(discovery.State{Nodes: nodes})
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(3 * time.Millisecond):
		}
	}
}

// TestCloseEndsEveryWaitUnderNodeChurn: acquires, Listens and DB
// connections waiting for a node, while discovery adds and removes nodes,
// all end when the Manager closes, and nothing the Manager started stays.
func TestCloseEndsEveryWaitUnderNodeChurn(t *testing.T) {
	before := goleak.IgnoreCurrent()
	for round := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		m, err := hasql.New(ctx, "postgres://u@127.0.0.1:1/db?hasql_check_timeout=200ms&hasql_check_interval=50ms&hasql_acquire_timeout=0",
			hasql.WithLogger(quiet), hasql.WithDiscoverer(churnDiscoverer{}))
		require.NoError(t, err)
		db := m.DB(hasql.TargetMaster)
		auto := m.DB(hasql.TargetAuto)
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for i := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				bg := context.Background()
				var err error
				switch i % 5 {
				case 0:
					var c interface{ Release() }
					pc, e := m.AcquireMaster(bg)
					if pc != nil {
						c = pc
						c.Release()
					}
					err = e
				case 1:
					pc, e := m.AcquireReplica(bg, hasql.FallbackToMaster(), hasql.MinLSN(1))
					if pc != nil {
						pc.Release()
					}
					err = e
				case 2:
					l, e := m.Listen(bg, "ch")
					if l != nil {
						l.Close()
					}
					err = e
				case 3:
					err = db.PingContext(bg)
				case 4:
					err = auto.PingContext(hasql.ReadOnly(bg))
				}
				errs <- err
			}()
		}
		time.Sleep(time.Duration(round*20) * time.Millisecond) // vary where Close lands; not an assertion
		closed := make(chan struct{})
		go func() { m.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(15 * time.Second):
			t.Fatalf("round %d: Close still running 15s later", round)
		}
		waited := make(chan struct{})
		go func() { wg.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(15 * time.Second):
			t.Fatalf("round %d: calls waiting for a node still waiting 15s after Close returned", round)
		}
		close(errs)
		for err := range errs {
			if err == nil {
				t.Errorf("round %d: a call succeeded with no server", round)
			}
		}
		db.Close()
		auto.Close()
		cancel()
	}
	goleak.VerifyNone(t, before)
}
