package hasql

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// A writable node the core does not elect yet (its decision waits for a
// check) is named with the reason, not as "role unknown", in what an
// acquire that found no master returns.
func TestWaitingWritableSaysWhy(t *testing.T) {
	const why = "the first master waits until every node of the connection string has answered a check or failed one"
	st := NodeStatus{Addr: "10.0.0.1:5432", Role: RoleUnknown, Up: true, Writable: true, LastCheck: time.Now(), Waiting: why}
	got := (&Manager{}).whyNot(st, targetMaster, nil, false)
	if got != "writable, not master yet: "+why {
		t.Errorf("whyNot: %q", got)
	}
	e := &NoNodeError{Target: ErrNoMaster, Cause: context.DeadlineExceeded, Nodes: []NodeStatus{st}}
	if msg := e.Error(); !strings.Contains(msg, "10.0.0.1:5432 writable, not master yet: "+why) {
		t.Errorf("NoNodeError without Why: %q", msg)
	}
	st.Waiting = ""
	if got := (&Manager{}).whyNot(st, targetMaster, nil, false); got != "role unknown" {
		t.Errorf("whyNot of a node that waits for nothing: %q", got)
	}
}

// A node that serves no acquire for a reason of its own state is named with
// the same words in WaitReady's error and in a NoNodeError.
func TestNodeReasonsAgree(t *testing.T) {
	now := time.Now()
	for _, st := range []NodeStatus{
		{Addr: "a:1", Role: RoleStaleMaster, Up: true, Writable: true, LastCheck: now, Timeline: 3, StaleBehind: "b:1"},
		{Addr: "a:1", Role: RoleStaleMaster, Up: true, Writable: true, LastCheck: now, Timeline: 2},
		{Addr: "a:1", Role: RoleUnknown, Up: true, Writable: true, LastCheck: now, SplitBrain: true},
		{Addr: "a:1", Role: RoleDetached, Up: true, LastCheck: now, Detached: "system identifier 7 is not the cluster's 6"},
		{Addr: "a:1", Role: RoleUnknown, Up: true, Writable: true, LastCheck: now, Waiting: "a check of b:1"},
	} {
		want := describe(st)
		for _, tg := range []target{targetMaster, targetReplica} {
			if got := (&Manager{}).whyNot(st, tg, nil, false); got != want {
				t.Errorf("%s: whyNot %q, describe %q", st.Role, got, want)
			}
		}
	}
}

// A node that is up, with the error of a failed connect the application
// met on it as LastError (its role not decided yet), is not said to be
// down in WaitReady's error or a NoNodeError.
func TestAnUpNodeWithAConnectErrorIsNotDown(t *testing.T) {
	st := NodeStatus{Addr: "a:1", Role: RoleUnknown, Up: true, LastCheck: time.Now(), LastError: errors.New("DB connect: refused")}
	if got := describe(st); strings.HasPrefix(got, "down") {
		t.Errorf("describe of an up node: %q", got)
	}
	st.Up = false
	if got := describe(st); got != "down: DB connect: refused" {
		t.Errorf("describe of a down node: %q", got)
	}
}
