package checker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseWalsenders(t *testing.T) {
	reps, pids, err := parseWalsenders("101|streaming|sync|0/3000148|0/3000148|0/3000060|0.000512;102|catchup||1/A|||")
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
