package hasql_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/pgxha/pgxha/hasql"
)

// TestStaleMasterErrorSaysWhy: a stale master's error says what makes it
// stale and the ways out: an older timeline, or a replica holding WAL of
// the node's own timeline the node never wrote (named, with the check
// user's pg_monitor that lets pgxha see that replica stream from it).
func TestStaleMasterErrorSaysWhy(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       *hasql.StaleMasterError
		want, not []string
	}{{
		name: "older timeline",
		err:  &hasql.StaleMasterError{Nodes: []string{"a:5432 (timeline 1)"}, Timeline: 2, Behind: []string{""}},
		want: []string{"a:5432 (timeline 1) writable on an older timeline than the cluster's 2", "promote a replica on timeline 2", "ForgetTimeline"},
		not:  []string{"pg_monitor", "behind"},
	}, {
		name: "older timeline, no Behind (built by hand)",
		err:  &hasql.StaleMasterError{Nodes: []string{"a:5432 (timeline 1)"}, Timeline: 2},
		want: []string{"writable on an older timeline than the cluster's 2", "ForgetTimeline"},
		not:  []string{"pg_monitor"},
	}, {
		name: "behind a replica",
		err: &hasql.StaleMasterError{Nodes: []string{"a:5432 (timeline 2, behind replica b:5432)"}, Timeline: 2,
			Behind: []string{"b:5432"}},
		want: []string{"writable, but replica b:5432 holds WAL of its timeline it never wrote", "promote b:5432",
			"ForgetTimeline to give up what b:5432 holds", "pg_monitor"},
		not: []string{"older timeline than"},
	}, {
		name: "behind the replica that answered at an address reaching it now",
		err: &hasql.StaleMasterError{Nodes: []string{"a:5432 (timeline 2, behind the replica that answered at b:5432 before this server did)"}, Timeline: 2,
			Behind: []string{"b:5432"}, BehindMoved: []bool{true}},
		want: []string{"the replica that answered at b:5432 before a name moved onto this server held WAL", "ForgetTimeline"},
		not:  []string{"promote b:5432", "older timeline than"},
	}, {
		name: "both",
		err: &hasql.StaleMasterError{Nodes: []string{"a:5432 (timeline 1)", "c:5432 (timeline 2, behind replica b:5432)"},
			Timeline: 2, Behind: []string{"", "b:5432"}},
		want: []string{"a:5432 (timeline 1) and c:5432 (timeline 2, behind replica b:5432) writable, each on an older timeline than the cluster's 2 or behind the replica named",
			"rewind each", "promote one replica", "ForgetTimeline"},
		not: []string{"promote b:5432", "rewind it "},
	}, {
		name: "older timeline, two nodes",
		err:  &hasql.StaleMasterError{Nodes: []string{"a:5432 (timeline 1)", "c:5432 (timeline 1)"}, Timeline: 2, Behind: []string{"", ""}},
		want: []string{"a:5432 (timeline 1) and c:5432 (timeline 1) writable on an older timeline than the cluster's 2", "rewind them to rejoin as replicas"},
		not:  []string{"rewind it "},
	}, {
		// Two servers promoted apart on one timeline, each behind its own
		// replica of the true branch (topology's
		// TestTwoStaleMastersBehindTwoReplicas): promoting both replicas
		// would make two masters.
		name: "two behind two replicas",
		err: &hasql.StaleMasterError{Nodes: []string{"a:5432 (timeline 2, behind replica b:5432)", "c:5432 (timeline 2, behind replica d:5432)"},
			Timeline: 2, Behind: []string{"b:5432", "d:5432"}},
		want: []string{"a:5432 (timeline 2, behind replica b:5432) and c:5432 (timeline 2, behind replica d:5432) writable",
			"promote one replica", "rewind each", "pg_monitor"},
		not: []string{"promote b:5432", "b:5432 and d:5432", "d:5432 holds", "rewind it "},
	}, {
		name: "two behind one replica",
		err: &hasql.StaleMasterError{Nodes: []string{"a:5432 (timeline 2, behind replica b:5432)", "c:5432 (timeline 2, behind replica b:5432)"},
			Timeline: 2, Behind: []string{"b:5432", "b:5432"}},
		want: []string{"promote one replica", "rewind each"},
		not:  []string{"b:5432 and b:5432", "rewind it "},
	}} {
		msg := tc.err.Error()
		for _, w := range tc.want {
			assert.Contains(t, msg, w, tc.name)
		}
		for _, n := range tc.not {
			assert.NotContains(t, msg, n, tc.name)
		}
		assert.True(t, errors.Is(tc.err, hasql.ErrStaleMaster) && errors.Is(tc.err, hasql.ErrNoMaster), tc.name)
		assert.Equal(t, 1, strings.Count(msg, "hasql: stale master"), tc.name)
	}
}
