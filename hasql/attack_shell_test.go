//go:build linux

package hasql

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgxha/pgxha/discovery"
)

// chanDiscoverer reports the sets sent on its channel.
type chanDiscoverer struct{ sets chan []discovery.Node }

func (d *chanDiscoverer) Run(ctx context.Context, update func(discovery.State)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-d.sets:
			update(discovery.State{Nodes: s})
		}
	}
}

// (A review's finding, kept as a regression test.) A discovered set none of whose members can be made a node (here
// ConfigureNode refuses the new addresses) empties the Manager's set,
// although the core ignores an empty set.
func TestAttackShellSetEmptiedByUnusableMembers(t *testing.T) {
	d := &chanDiscoverer{sets: make(chan []discovery.Node, 4)}
	d.sets <- []discovery.Node{{Addr: "127.0.0.1:1"}, {Addr: "127.0.0.1:2"}}
	m, err := New(context.Background(), "postgres://u@127.0.0.1:1,127.0.0.1:2/db?hasql_check_timeout=200ms",
		WithDiscoverer(d), func(c *Config) error {
			c.ConfigureNode = func(n NodeConfig, _ *pgxpool.Config) error {
				if n.Addr == "127.0.0.1:3" {
					return errors.New("credentials for 127.0.0.1:3 not available yet")
				}
				return nil
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if n := len(m.Nodes()); n != 2 {
		t.Fatalf("start: %d nodes", n)
	}
	d.sets <- []discovery.Node{{Addr: "127.0.0.1:3"}}
	// Wait for the outcome: the set was taken and found unusable.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for m.Stat().Discovery.Err == nil {
		select {
		case <-ctx.Done():
			t.Fatal("the unusable set was never reported")
		case <-time.After(10 * time.Millisecond):
		}
	}
	m.mu.Lock()
	coreN := len(m.core.Nodes())
	m.mu.Unlock()
	t.Logf("Manager nodes %d, core nodes %d", len(m.Nodes()), coreN)
	if len(m.Nodes()) == 0 {
		t.Errorf("the Manager's node set was emptied (the core kept %d nodes)", coreN)
	}
}
