//go:build linux

package hasql_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

// A NoNodeError says why each node was not used: a replica a WithTag
// option kept out lacks the tag (it read "qualified", which the acquire
// contradicted).
func TestNoReplicaErrorNamesTheMissingTag(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	m := newManager(t, ctx, c.DSN())
	require.NoError(t, m.WaitReady(ctx, 1, 1))
	actx, acancel := context.WithTimeout(ctx, 300*time.Millisecond)
	conn, err := m.AcquireReplica(actx, hasql.WithTag("dc", "east"))
	acancel()
	if conn != nil {
		conn.Release()
	}
	require.ErrorIs(t, err, hasql.ErrNoReplica)
	var ne *hasql.NoNodeError
	require.ErrorAs(t, err, &ne)
	found := false
	for i, st := range ne.Nodes {
		if st.Name == "n2" {
			found = true
			assert.NotContains(t, ne.Why[i], "qualified")
			assert.Contains(t, ne.Why[i], "no tag dc=east")
		}
	}
	require.True(t, found, "%v", err)
}
