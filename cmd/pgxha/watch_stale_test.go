package main

import (
	"strings"
	"testing"
	"time"

	"github.com/pgxha/pgxha/hasql"
)

// TestWatchPrintsAStaleReasonThatChanges: two views that differ only in the
// replica a stale master is behind (or in that it is now on an older
// timeline instead) print different tables, and a non-terminal pgxha watch
// must print the new one: changeKey holds why a node is detached or its
// sync state unknown, and must hold why a master is stale too.
func TestWatchPrintsAStaleReasonThatChanges(t *testing.T) {
	now := time.Now()
	view := func(behind string) report {
		return makeReport(now, []hasql.NodeStatus{
			{Addr: "h1:5432", Name: "r", Role: hasql.RoleStaleMaster, Up: true, Writable: true, LastCheck: now, Timeline: 2, StaleMaster: true, StaleBehind: behind},
			{Addr: "h2:5432", Name: "y", Role: hasql.RoleDetached, Up: true, LastCheck: now, Timeline: 2, Detached: "not streaming from the master"},
			{Addr: "h3:5432", Name: "z", Role: hasql.RoleDetached, Up: true, LastCheck: now, Timeline: 2, Detached: "not streaming from the master"},
		}, redactor{})
	}
	for _, tc := range []struct{ from, to string }{{"h2:5432", ""}, {"h2:5432", "h3:5432"}, {"", "h2:5432"}} {
		a, b := view(tc.from), view(tc.to)
		var ta, tb strings.Builder
		if err := writeTable(&ta, a, ""); err != nil {
			t.Fatal(err)
		}
		if err := writeTable(&tb, b, ""); err != nil {
			t.Fatal(err)
		}
		if ta.String() != tb.String() && changeKey(a) == changeKey(b) {
			t.Errorf("stale behind %q -> %q: the table changes but changeKey does not: pgxha watch (not on a terminal) prints no new frame\nold frame:\n%s\nnew frame (never printed):\n%s",
				tc.from, tc.to, ta.String(), tb.String())
		}
	}
}
