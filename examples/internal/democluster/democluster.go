// Package democluster gives the examples a cluster: PGXHA_DSN when set,
// otherwise an embedded local one (1 master, 1 sync replica, 1 async
// replica) that Stop removes.
package democluster

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/pgxha/pgxha/testcluster"
)

// Cluster is what an example runs against. C is nil with PGXHA_DSN.
type Cluster struct {
	DSN string
	C   *testcluster.Cluster
}

// Start returns PGXHA_DSN, or starts a local cluster.
func Start(ctx context.Context) (*Cluster, error) {
	if dsn := os.Getenv("PGXHA_DSN"); dsn != "" {
		return &Cluster{DSN: dsn}, nil
	}
	fmt.Println("Starting a local cluster: 1 master, 1 sync replica, 1 async replica...")
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c, err := testcluster.Start(ctx, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	if err != nil {
		return nil, err
	}
	return &Cluster{DSN: c.DSN(), C: c}, nil
}

// Stop stops the local cluster, if one was started.
func (c *Cluster) Stop() {
	if c.C != nil {
		c.C.Stop()
	}
}
