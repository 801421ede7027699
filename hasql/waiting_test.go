package hasql

import (
	"context"
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
