package hasql

import (
	"testing"

	"github.com/pgxha/pgxha/hasql/internal/topology"
)

// Role's values are the decision core's: the shell converts one to the
// other.
func TestRolesAreTheCores(t *testing.T) {
	for _, c := range []struct {
		r    Role
		core topology.Role
		s    string
	}{
		{RoleUnknown, topology.RoleUnknown, "unknown"}, {RoleMaster, topology.RoleMaster, "master"},
		{RoleSyncReplica, topology.RoleSyncReplica, "sync"}, {RoleAsyncReplica, topology.RoleAsyncReplica, "async"},
		{RoleQuorumReplica, topology.RoleQuorumReplica, "quorum"}, {RoleReplica, topology.RoleReplica, "replica"},
		{RoleDetached, topology.RoleDetached, "detached"}, {RoleStaleMaster, topology.RoleStaleMaster, "stale"},
	} {
		if int(c.r) != int(c.core) || c.r.String() != c.s {
			t.Errorf("%s: hasql %d, core %d (%s)", c.s, c.r, c.core, c.r.String())
		}
	}
}
