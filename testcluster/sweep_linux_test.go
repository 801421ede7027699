package testcluster_test

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/testcluster"
)

// plantCluster makes, under base, what looks like the directory of a
// cluster whose test process died: an owner that is gone, and a node whose
// postmaster.pid names the shared memory segment shmid (key 0).
func plantCluster(t *testing.T, base string, shmid int) string {
	t.Helper()
	dir, err := os.MkdirTemp(base, "pgxha-testcluster-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.WriteFile(filepath.Join(dir, "owner"), []byte("999999999 1"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "n1"), 0o700))
	pid := "999999999\n" + dir + "/n1\n1\n5432\n/tmp\nlocalhost\n0 " + strconv.Itoa(shmid) + "\nready\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "n1", "postmaster.pid"), []byte(pid), 0o600))
	return dir
}

// newSegment makes a System V shared memory segment that the test removes.
func newSegment(t *testing.T) int {
	t.Helper()
	const ipcPrivate, ipcCreat = 0, 0o1000
	id, _, errno := syscall.Syscall(syscall.SYS_SHMGET, ipcPrivate, 4096, ipcCreat|0o600)
	require.Zero(t, errno, "shmget")
	t.Cleanup(func() { _, _, _ = syscall.Syscall(syscall.SYS_SHMCTL, id, 0 /* IPC_RMID */, 0) })
	return int(id)
}

func segmentExists(id int) bool {
	var ds [512]byte
	_, _, errno := syscall.Syscall(syscall.SYS_SHMCTL, uintptr(id), 2 /* IPC_STAT */, uintptr(unsafePointer(&ds)))
	return errno == 0
}

// TestSweepOnlyOwnDirs: a new cluster sweeps what dead clusters left in
// its own base directory only, and only directories its user owns. A
// stale-looking directory planted by another user in that base, or any
// left in the system's temporary directory while Options.Dir is
// elsewhere, is left alone, and so is the shared memory segment it names.
func TestSweepOnlyOwnDirs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("planting a directory of another user needs root")
	}
	base := t.TempDir()
	// The servers' user must reach it.
	require.NoError(t, os.Chmod(filepath.Dir(base), 0o755))
	require.NoError(t, os.Chmod(base, 0o755))
	foreignSeg := newSegment(t)
	foreign := plantCluster(t, base, foreignSeg)
	require.NoError(t, filepath.Walk(foreign, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 65534, 65534) // nobody
	}))
	elsewhereSeg := newSegment(t)
	elsewhere := plantCluster(t, os.TempDir(), elsewhereSeg)

	testcluster.New(t, testcluster.Options{Replicas: -1, Dir: base})

	assert.DirExists(t, foreign, "another user's directory is not swept")
	assert.True(t, segmentExists(foreignSeg), "the segment another user's directory names is not removed")
	assert.DirExists(t, elsewhere, "a directory outside Options.Dir is not swept")
	assert.True(t, segmentExists(elsewhereSeg))
}
