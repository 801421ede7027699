package checker

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/testcluster"
)

func TestParseWalsenders(t *testing.T) {
	reps, pids, err := parseWalsenders("101|streaming|sync|0/3000148|0/3000148|0/3000060|512;102|catchup||1/A|||")
	require.NoError(t, err)
	assert.Equal(t, []int32{101, 102}, pids)
	assert.Equal(t, []Replica{
		{State: "streaming", SyncState: "sync", SentLSN: 0x3000148, FlushLSN: 0x3000148, ReplayLSN: 0x3000060,
			ReplayLag: 512 * time.Microsecond, HasReplayLag: true},
		{State: "catchup", SentLSN: 0x1_0000000A},
	}, reps)

	for _, bad := range []string{
		"101|streaming|sync|0/1|0/1|0/1",         // a field short
		"x|streaming|sync|0/1|0/1|0/1|",          // pid
		"101|streaming|sync|zz|0/1|0/1|",         // LSN
		"101|streaming|sync|0/1|0/1|0/1|-1",      // negative lag
		"101|streaming|sync|0/1|0/1|0/1|soon",    // lag
		"101|streaming|sync|0/1|0/1|0/1|1|extra", // a field too many
	} {
		_, _, err := parseWalsenders(bad)
		assert.Error(t, err, bad)
	}
}

// TestAnotherServerBehindTheConnection: a connection that reaches another
// server than the one it remembered (a pooler whose target moved) drops
// what it remembered: the master's timeline is read from the server it
// reaches now.
func TestAnotherServerBehindTheConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 1})
	conn, err := pgx.Connect(ctx, c.Master().DSN())
	require.NoError(t, err)
	defer conn.Close(ctx)
	first, err := PostgreSQL().Check(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, uint32(1), first.Timeline)

	// What the connection would remember of another server, on another
	// timeline, started at another time.
	data := conn.PgConn().CustomData()
	data[serverIdentity] = server{systemID: 42, startTime: first.StartTime.Add(-time.Hour), clusterName: "other"}
	data[masterTimeline] = uint32(7)
	data[kindKey] = kindMaster

	got, err := PostgreSQL().Check(ctx, conn)
	require.NoError(t, err)
	assert.Equal(t, uint32(1), got.Timeline, "the timeline of the server reached now")
	assert.Equal(t, first.SystemID, got.SystemID)
	assert.True(t, first.StartTime.Equal(got.StartTime))
	assert.Equal(t, first.Name, got.Name)
	assert.Len(t, got.Replicas, 1)
}
