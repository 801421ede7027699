package discovery_test

import (
	"context"
	"fmt"
	"time"

	"github.com/pgxha/pgxha/discovery"
)

func ExampleFromSettings() {
	// The settings of postgres://app@db.prod.svc.cluster.local:5432/app?hasql_discovery=dns
	d, err := discovery.FromSettings(map[string]string{"hasql_discovery": "dns"}, []string{"db.prod.svc.cluster.local:5432"})
	if err != nil {
		panic(err)
	}
	fmt.Println(d)

	_, err = discovery.FromSettings(map[string]string{"hasql_discovery": "patroni", "hasql_discovery_interval": "soon"}, []string{"pg1:5432"})
	fmt.Println(err)
	// Output:
	// dns db.prod.svc.cluster.local port 5432
	// discovery: hasql_discovery_interval "soon": want a duration such as 500ms or 10s
}

func ExampleDiff() {
	old := []discovery.Node{{Addr: "10.0.0.1:5432"}, {Addr: "10.0.0.2:5432"}}
	new := []discovery.Node{{Addr: "10.0.0.2:5432", Tags: map[string]string{"zone": "b"}}, {Addr: "10.0.0.3:5432"}}
	c := discovery.Diff(old, new)
	fmt.Println("added:", addrs(c.Added))
	fmt.Println("removed:", addrs(c.Removed))
	fmt.Println("changed:", addrs(c.Changed))
	// Output:
	// added: [10.0.0.3:5432]
	// removed: [10.0.0.1:5432]
	// changed: [10.0.0.2:5432]
}

func ExampleStatic() {
	d, _ := discovery.NewStatic(discovery.Node{Addr: "pg1:5432"}, discovery.Node{Addr: "pg2:5432"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_ = d.Run(ctx, func(s discovery.State) { fmt.Println(addrs(s.Nodes), s.Err) })
	// Output:
	// [pg1:5432 pg2:5432] <nil>
}
