package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/testcluster"
)

// syncBuffer collects serve's answers to standard input.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestChaosByHand drives a running cluster the way a user does: commands on
// standard input and from a second invocation through the control socket.
func TestChaosByHand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: 2, SyncReplicas: 1})
	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]

	stdin, typed := io.Pipe()
	defer typed.Close()
	var out syncBuffer
	served := make(chan error, 1)
	go func() { served <- serve(ctx, c, stdin, &out, filepath.Join(c.Dir(), controlSocket)) }()

	// ctl is a second invocation: testcluster -ctl DIR COMMAND.
	ctl := func(line string) (string, error) {
		t.Helper()
		var answer bytes.Buffer
		var err error
		require.Eventually(t, func() bool { // the socket may not listen yet
			answer.Reset()
			err = control(c.Dir(), line, &answer)
			return err == nil || !strings.Contains(err.Error(), "no testcluster answers")
		}, time.Minute, 10*time.Millisecond)
		return answer.String(), err
	}
	// typeLine types a command on standard input and waits for its answer.
	typeLine := func(line, want string) {
		t.Helper()
		_, err := io.WriteString(typed, line+"\n")
		require.NoError(t, err)
		require.Eventually(t, func() bool { return strings.Contains(out.String(), want) }, 3*time.Minute, 10*time.Millisecond,
			"%q answers %q; output so far:\n%s", line, want, out.String())
	}

	status, err := ctl("status")
	require.NoError(t, err)
	for _, n := range c.Nodes() {
		require.Positive(t, n.PID(), "%s runs", n)
		assert.DirExists(t, n.DataDir())
		assert.FileExists(t, filepath.Join(n.DataDir(), "PG_VERSION"))
		assert.Regexp(t, n.Name()+`\s+`+n.Addr()+`\s+\S+\s+1\s+`+strconv.Itoa(n.PID())+`\s+`+n.DataDir(), status,
			"status shows %s's PID and data directory", n)
	}
	assert.Contains(t, status, "PID")
	assert.Contains(t, status, "DATA DIR")

	typeLine("pause n3", "pause n3: done")
	paused, err := os.ReadFile("/proc/" + strconv.Itoa(n3.PID()) + "/stat")
	require.NoError(t, err)
	assert.Contains(t, string(paused), ") T ", "n3's postmaster is stopped (SIGSTOP)")
	status, err = ctl("status")
	require.NoError(t, err)
	assert.Regexp(t, `n1\s+\S+\s+master\s+1\s`, status, "the healthy nodes keep their roles while n3 is paused")
	assert.Regexp(t, `n2\s+\S+\s+sync\s+1\s`, status)
	assert.Regexp(t, `n3\s+\S+\s+paused\s+.*\spaused\n`, status, "n3 shows paused, in ROLE and FAULTS")
	typeLine("resume n3", "resume n3: done")

	_, err = ctl("partition n3")
	require.NoError(t, err)
	_, err = ctl("heal n3")
	require.NoError(t, err)

	answer, err := ctl("kill n1")
	require.NoError(t, err, answer)
	assert.False(t, n1.Running())
	assert.Zero(t, n1.PID())
	assert.Regexp(t, `n1\s+\S+\s+.*\s+-\s+`+n1.DataDir(), answer, "a dead node shows no PID")

	answer, err = ctl("failover n2")
	require.NoError(t, err, answer)
	assert.Equal(t, n2, c.Master())
	assert.Regexp(t, `n2\s+\S+\s+master\s+2\s`, answer)

	answer, err = ctl("rejoin n1")
	require.NoError(t, err, answer)
	assert.True(t, n1.Running())
	assert.Regexp(t, `n1\s+\S+\s+async\s+2\s`, answer, "n1 follows n2 on its timeline")

	_, err = ctl("stop n3")
	require.NoError(t, err)
	assert.False(t, n3.Running())
	_, err = ctl("start n3")
	require.NoError(t, err)
	assert.True(t, n3.Running())

	answer, err = ctl("explode n1")
	require.Error(t, err)
	assert.Contains(t, answer, `unknown command "explode"`)
	answer, err = ctl("kill n9")
	require.Error(t, err)
	assert.Contains(t, answer, `no node "n9": the nodes are n1, n2, n3`)
	_, err = ctl("  ")
	require.Error(t, err)

	typeLine("quit", "quitting")
	require.NoError(t, <-served)
	assert.NoFileExists(t, filepath.Join(c.Dir(), controlSocket), "the socket goes with the command")
}

// TestClusterOptions checks how -replicas and -sync become Options: 0
// replicas is a master alone whatever -sync's default, and an impossible
// pair is an error that names the flag.
func TestClusterOptions(t *testing.T) {
	for _, tc := range []struct {
		replicas, sync int
		syncSet        bool
		want           testcluster.Options
		err            string
	}{
		{replicas: 2, sync: 1, want: testcluster.Options{Replicas: 2, SyncReplicas: 1}},
		{replicas: 0, sync: 1, want: testcluster.Options{Replicas: -1}},
		{replicas: 0, sync: 0, syncSet: true, want: testcluster.Options{Replicas: -1}},
		{replicas: 3, sync: 0, syncSet: true, want: testcluster.Options{Replicas: 3}},
		{replicas: 0, sync: 1, syncSet: true, err: "-sync 1: a master alone"},
		{replicas: 1, sync: 2, syncSet: true, err: "-sync 2: at most -replicas (1)"},
		{replicas: -1, sync: 1, err: "-replicas -1"},
	} {
		got, err := clusterOptions(tc.replicas, tc.sync, tc.syncSet)
		if tc.err != "" {
			assert.ErrorContains(t, err, tc.err, "-replicas %d -sync %d", tc.replicas, tc.sync)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, tc.want, got, "-replicas %d -sync %d", tc.replicas, tc.sync)
	}
}

// TestMasterAlone starts what `testcluster -replicas 0` starts: one node,
// the master.
func TestMasterAlone(t *testing.T) {
	opts, err := clusterOptions(0, 1, false)
	require.NoError(t, err)
	c := testcluster.New(t, opts)
	require.Len(t, c.Nodes(), 1)
	assert.Equal(t, c.Nodes()[0], c.Master())
	states := c.Status(t.Context())
	require.Len(t, states, 1)
	assert.Equal(t, "master", states[0].Role, "%+v", states[0])
}
