package balancer_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/balancer"
)

func TestByName(t *testing.T) {
	tests := []struct {
		name string
		want string // Name() of the builder
	}{
		{"round_robin", "round_robin"},
		{"roundrobin", "round_robin"},
		{"round-robin", "round_robin"},
		{"random", "random"},
		{"weighted", "weighted"},
		{"weighted_random", "weighted"},
		{"least_busy", "least_busy"},
		{"least-busy", "least_busy"},
		{"leastbusy", "least_busy"},
		{"p2c", "p2c"},
		{"first", "first"},
		{"least_lag", "least_lag"},
		{"least-lag", "least_lag"},
		{"leastlag", "least_lag"},
		{"Round_Robin", "round_robin"},
		{" P2C ", "p2c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := balancer.ByName(tt.name)
			require.NoError(t, err)
			assert.Equal(t, tt.want, b.Name())
		})
	}
}

func TestByNameUnknown(t *testing.T) {
	valid := []string{"round_robin", "random", "weighted", "least_busy", "p2c", "first", "least_lag"}
	for _, name := range []string{"", "fastest", "round robin", "least_connections", "p2c2"} {
		t.Run(name, func(t *testing.T) {
			b, err := balancer.ByName(name)
			require.Error(t, err)
			assert.Nil(t, b)
			assert.ErrorContains(t, err, `"`+name+`"`, "the error must quote the bad name")
			for _, v := range valid {
				assert.ErrorContains(t, err, v, "the error must list the valid names")
			}
		})
	}
}

func TestByNameRoundTrip(t *testing.T) {
	for _, b := range policies {
		t.Run(b.Name(), func(t *testing.T) {
			got, err := balancer.ByName(b.Name())
			require.NoError(t, err)
			assert.Equal(t, b.Name(), got.Name())
		})
	}
}

func TestSingleNode(t *testing.T) {
	nodes := []struct {
		name string
		node balancer.Node
	}{
		{"ordinary", makeNodes(spec{})[0]},
		{"busy and slow", makeNodes(spec{w: 0.1, lat: 1e9, use: 1000})[0]},
		{"nil InUse, zero weight", balancer.Node{Index: 7, Addr: "db:5432"}},
	}
	for _, b := range policies {
		for _, nd := range nodes {
			t.Run(b.Name()+"/"+nd.name, func(t *testing.T) {
				p := b.Build([]balancer.Node{nd.node})
				for range 100 {
					require.Equal(t, 0, p.Pick())
				}
			})
		}
	}
}

func TestBuildEmptyPanics(t *testing.T) {
	for _, b := range policies {
		t.Run(b.Name(), func(t *testing.T) {
			want := "balancer: " + b.Name() + ": Build called with no nodes"
			assert.PanicsWithValue(t, want, func() { b.Build(nil) })
			assert.PanicsWithValue(t, want, func() { b.Build([]balancer.Node{}) })
		})
	}
}

func TestReadsInUse(t *testing.T) {
	for _, tc := range []struct {
		b    balancer.Builder
		want bool
	}{
		{balancer.RoundRobin(), false},
		{balancer.Random(), false},
		{balancer.WeightedRandom(), false},
		{balancer.First(), false},
		{balancer.LeastLag(), false},
		{balancer.LeastBusy(), true},
		{balancer.P2C(), true},
		{customBuilder{}, true}, // unknown: assumed to read it
	} {
		if got := balancer.ReadsInUse(tc.b); got != tc.want {
			t.Errorf("ReadsInUse(%s) = %v, want %v", tc.b.Name(), got, tc.want)
		}
	}
}

type customBuilder struct{}

func (customBuilder) Name() string                          { return "custom" }
func (customBuilder) Build([]balancer.Node) balancer.Picker { return nil }
