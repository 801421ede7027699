package discovery_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgxha/pgxha/discovery"
)

// waitBound bounds every wait of these tests: generous, since the machine
// may be busy; tests assert what happened, never how fast.
const waitBound = 60 * time.Second

// watcher runs a Discoverer as the Manager will: Run on a goroutine of its
// own, under a context that ends with the test, and waited for.
type watcher struct {
	t testing.TB

	mu      sync.Mutex // guards the fields below
	states  []discovery.State
	changed chan struct{} // closed and replaced on each update
}

// watch starts d.Run; the test's cleanup cancels it and checks that Run
// returned nil.
func watch(t testing.TB, d discovery.Discoverer) *watcher {
	t.Helper()
	w := &watcher{t: t, changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, w.update) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil when its context ends", err)
			}
		case <-time.After(waitBound):
			t.Errorf("Run did not return within %s of its context's end", waitBound)
		}
	})
	return w
}

func (w *watcher) update(s discovery.State) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.states = append(w.states, s)
	close(w.changed)
	w.changed = make(chan struct{})
}

// all returns every State reported so far.
func (w *watcher) all() []discovery.State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]discovery.State(nil), w.states...)
}

// waitFor waits until the latest State satisfies ok and returns it; it
// fails the test after waitBound.
func (w *watcher) waitFor(what string, ok func(discovery.State) bool) discovery.State {
	w.t.Helper()
	timeout := time.After(waitBound)
	for {
		w.mu.Lock()
		var last *discovery.State
		if len(w.states) > 0 {
			last = &w.states[len(w.states)-1]
		}
		changed := w.changed
		w.mu.Unlock()
		if last != nil && ok(*last) {
			return *last
		}
		select {
		case <-changed:
		case <-timeout:
			w.t.Fatalf("waiting for %s: none within %s; states: %s", what, waitBound, describe(w.all()))
		}
	}
}

// addrsAre returns a predicate: no error, and the nodes' addresses are want,
// in order.
func addrsAre(want ...string) func(discovery.State) bool {
	return func(s discovery.State) bool {
		return s.Err == nil && strings.Join(addrs(s.Nodes), " ") == strings.Join(want, " ")
	}
}

func addrs(nodes []discovery.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Addr
	}
	return out
}

func describe(states []discovery.State) string {
	var b strings.Builder
	for i, s := range states {
		fmt.Fprintf(&b, "\n  %d: %v err=%v", i, addrs(s.Nodes), s.Err)
	}
	return b.String()
}
