package testcluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A test starts a real cluster (a master, a sync and an async replica),
// points the code under test at its DSN, and breaks it.
func ExampleNew() {
	var t *testing.T // the test's
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1}) // stopped when the test ends
	m, err := hasql.New(ctx, c.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	if err := c.Master().Kill(); err != nil { // a crash
		t.Fatal(err)
	}
	if err := c.Failover(ctx, c.Nodes()[1]); err != nil { // promote n2, repoint n3
		t.Fatal(err)
	}
	if err := c.Rejoin(ctx, c.Nodes()[0]); err != nil { // n1 back as a replica of n2
		t.Fatal(err)
	}
}
