package discovery_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
)

func TestStatic(t *testing.T) {
	nodes := []discovery.Node{{Addr: "db1:5432", Tags: map[string]string{"zone": "a"}}, {Addr: "[::1]:5433", Name: "local"}}
	s, err := discovery.NewStatic(nodes...)
	require.NoError(t, err)
	nodes[0].Tags["zone"] = "changed" // the Static keeps its own copy
	assert.Equal(t, "static db1:5432,[::1]:5433", s.String())

	w := watch(t, s)
	st := w.waitFor("the set", func(discovery.State) bool { return true })
	require.NoError(t, st.Err)
	require.Len(t, st.Nodes, 2)
	assert.Equal(t, "a", st.Nodes[0].Tags["zone"])
	assert.Equal(t, "local", st.Nodes[1].Name)
	assert.Len(t, w.all(), 1, "a static set is reported once")
}

func TestStaticRunReturnsWhenContextEnds(t *testing.T) {
	s, err := discovery.NewStatic(discovery.Node{Addr: "db:5432"})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	calls := 0
	require.NoError(t, s.Run(ctx, func(discovery.State) { calls++ }))
	assert.Equal(t, 1, calls)
}

func TestNewStaticErrors(t *testing.T) {
	tests := []struct {
		name  string
		nodes []discovery.Node
		want  string
	}{
		{"none", nil, "no node found"},
		{"no port", []discovery.Node{{Addr: "db"}}, `address "db": want host:port`},
		{"no host", []discovery.Node{{Addr: ":5432"}}, `address ":5432": no host`},
		{"bad port", []discovery.Node{{Addr: "db:0"}}, `address "db:0": port "0": want a number from 1 to 65535`},
		{"port too big", []discovery.Node{{Addr: "db:65536"}}, `port "65536"`},
		{"twice", []discovery.Node{{Addr: "db:5432"}, {Addr: "db:5432"}}, `address "db:5432": listed twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := discovery.NewStatic(tt.nodes...)
			assert.Nil(t, s)
			require.Error(t, err)
			assert.ErrorContains(t, err, tt.want)
			assert.ErrorContains(t, err, "discovery: static: ")
		})
	}
	_, err := discovery.NewStatic()
	assert.ErrorIs(t, err, discovery.ErrNoNodes)
}

func TestDiff(t *testing.T) {
	a := discovery.Node{Addr: "a:5432"}
	b := discovery.Node{Addr: "b:5432", Tags: map[string]string{"zone": "1"}}
	b2 := discovery.Node{Addr: "b:5432", Tags: map[string]string{"zone": "2"}}
	c := discovery.Node{Addr: "c:5432", Role: "replica"}
	c2 := discovery.Node{Addr: "c:5432", Role: "leader"}
	d := discovery.Node{Addr: "d:5432", Lag: discovery.Lag{Bytes: 5, Known: true}}
	d2 := discovery.Node{Addr: "d:5432", Lag: discovery.Lag{Bytes: 7, Known: true}}
	tests := []struct {
		name     string
		old, new []discovery.Node
		want     discovery.Changes
	}{
		{"same", []discovery.Node{a, b}, []discovery.Node{a, b}, discovery.Changes{}},
		{"order alone", []discovery.Node{a, b}, []discovery.Node{b, a}, discovery.Changes{}},
		{"from nothing", nil, []discovery.Node{a, b}, discovery.Changes{Added: []discovery.Node{a, b}}},
		{"to nothing", []discovery.Node{a, b}, nil, discovery.Changes{Removed: []discovery.Node{a, b}}},
		{"one in, one out", []discovery.Node{a, b}, []discovery.Node{b, c}, discovery.Changes{Added: []discovery.Node{c}, Removed: []discovery.Node{a}}},
		{"tags", []discovery.Node{a, b}, []discovery.Node{a, b2}, discovery.Changes{Changed: []discovery.Node{b2}}},
		{"role", []discovery.Node{c}, []discovery.Node{c2}, discovery.Changes{Changed: []discovery.Node{c2}}},
		{"lag", []discovery.Node{d}, []discovery.Node{d2}, discovery.Changes{Changed: []discovery.Node{d2}}},
		{"everything", []discovery.Node{a, b, c}, []discovery.Node{c2, d, b}, discovery.Changes{
			Added: []discovery.Node{d}, Removed: []discovery.Node{a}, Changed: []discovery.Node{c2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := discovery.Diff(tt.old, tt.new)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.want.Empty(), got.Empty())
		})
	}
}

func TestEqual(t *testing.T) {
	x := []discovery.Node{{Addr: "a:1", Tags: map[string]string{"k": "v"}}, {Addr: "b:1"}}
	y := []discovery.Node{{Addr: "a:1", Tags: map[string]string{"k": "v"}}, {Addr: "b:1", Tags: map[string]string{}}}
	assert.True(t, discovery.Equal(x, y), "a nil and an empty tag map are the same")
	assert.False(t, discovery.Equal(x, []discovery.Node{x[1], x[0]}), "order matters to Equal")
	assert.False(t, discovery.Equal(x, x[:1]))
	assert.True(t, discovery.Equal(nil, []discovery.Node{}))
}

func TestNodeTag(t *testing.T) {
	n := discovery.Node{Tags: map[string]string{
		"a": "true", "b": "True", "c": "1", "d": "on", "e": "yes", "f": " t ",
		"g": "false", "h": "0", "i": "", "j": "zone-a",
	}}
	for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
		assert.True(t, n.Tag(k), k)
	}
	for _, k := range []string{"g", "h", "i", "j", "missing"} {
		assert.False(t, n.Tag(k), k)
	}
	var none discovery.Node
	assert.False(t, none.Tag(discovery.TagNoLoadBalance), "nil tags")
}
