//go:build linux

package testcluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// PostgreSQL's postmaster makes every child a session leader (setsid), so a
// signal to the postmaster's process group does not reach its backends. The
// process tree is walked through /proc instead.

var subreaperOnce sync.Once

// becomeSubreaper makes this process the reaper of orphaned descendants, so
// backends of a killed postmaster are reparented to it and can be reaped here
// rather than left as zombies under an init that may not reap them.
func becomeSubreaper() {
	subreaperOnce.Do(func() {
		const prSetChildSubreaper = 36
		_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	})
}

// markOwner records this process as the owner of a cluster directory.
func markOwner(dir string) error {
	return os.WriteFile(filepath.Join(dir, "owner"), []byte(processIdentity(os.Getpid())), 0o644)
}

// processIdentity is a process ID and its start time, which together name a
// process even after its ID is reused.
func processIdentity(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 {
		return ""
	}
	return strconv.Itoa(pid) + " " + fields[19] // starttime, in clock ticks since boot
}

// sweepStale removes what clusters of dead test processes left under base:
// a test process killed without Stop leaves servers' frozen backends (its
// postmasters die with it, but backends frozen by Pause do not), System V
// segments and the directory. A cluster directory is stale when the process
// recorded as its owner is gone; clusters of live processes, this one's
// included, are left alone. Only directories that this user (or cred, the
// servers' user) owns count: base may be shared, and a directory planted
// by someone else must not make this process kill, remove or free anything.
func sweepStale(base string, cred *syscall.Credential) {
	trusted := func(fi os.FileInfo) bool {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || fi.Mode().Perm()&0o022 != 0 {
			return false
		}
		return st.Uid == uint32(os.Geteuid()) || cred != nil && st.Uid == cred.Uid
	}
	dirs, _ := filepath.Glob(filepath.Join(base, "pgxha-testcluster-*"))
	for _, dir := range dirs {
		if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() || !trusted(fi) {
			continue
		}
		ownerFile := filepath.Join(dir, "owner")
		if fi, err := os.Lstat(ownerFile); err != nil || !fi.Mode().IsRegular() || !trusted(fi) {
			continue // not marked (yet), or not by us: not ours to judge
		}
		owner, err := os.ReadFile(ownerFile)
		if err != nil {
			continue
		}
		fields := strings.Fields(string(owner))
		if len(fields) != 2 {
			continue
		}
		pid, err := strconv.Atoi(fields[0])
		if err != nil || processIdentity(pid) == string(owner) {
			continue // the owner is alive
		}
		killUnder(dir)
		nodes, _ := filepath.Glob(filepath.Join(dir, "*", "postmaster.pid"))
		for _, pidfile := range nodes {
			if fi, err := os.Lstat(pidfile); err == nil && fi.Mode().IsRegular() && trusted(fi) {
				removeShmem(filepath.Dir(pidfile), cred)
			}
		}
		_ = os.RemoveAll(dir)
	}
}

// killUnder kills every process working in dir or below.
func killUnder(dir string) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd")
		if err != nil || !(cwd == dir || strings.HasPrefix(cwd, dir+"/")) {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGCONT)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// removeShmem removes the System V shared memory segment that the server of
// dataDir recorded in its postmaster.pid. A server that exits normally
// removes it itself; a killed one leaves it, and a data directory deleted
// with it would leave it for good. The segment must still be the one
// recorded (its key) and made by this user or cred's: an ID is reused.
func removeShmem(dataDir string, cred *syscall.Credential) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 7 {
		return
	}
	fields := strings.Fields(lines[6]) // "key shmid"
	if len(fields) != 2 {
		return
	}
	key, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil {
		return
	}
	shmid, err := strconv.Atoi(fields[1])
	if err != nil || shmid < 0 {
		return
	}
	// IPC_STAT: struct shmid_ds starts with struct ipc_perm, whose first
	// fields are key, uid, gid, cuid (32 bits each) on Linux.
	const ipcRMID, ipcStat = 0, 2
	var ds [512]byte
	if _, _, errno := syscall.Syscall(syscall.SYS_SHMCTL, uintptr(shmid), ipcStat, uintptr(unsafe.Pointer(&ds[0]))); errno != 0 {
		return
	}
	segKey := int32(binary.NativeEndian.Uint32(ds[0:]))
	creator := binary.NativeEndian.Uint32(ds[12:])
	if int64(segKey) != key || !(creator == uint32(os.Geteuid()) || cred != nil && creator == cred.Uid) {
		return
	}
	_, _, _ = syscall.Syscall(syscall.SYS_SHMCTL, uintptr(shmid), ipcRMID, 0)
}

// ramDirWithRoom reports whether dir is a writable tmpfs with at least free
// bytes available.
func ramDirWithRoom(dir string, free uint64) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false
	}
	const tmpfsMagic = 0x01021994
	if st.Type != tmpfsMagic || st.Bavail*uint64(st.Bsize) < free {
		return false
	}
	return syscall.Access(dir, 2 /* W_OK */) == nil
}

// isPostmaster reports a postgres postmaster: started with -D, where its
// children carry a process title instead.
func isPostmaster(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	for _, arg := range strings.Split(string(b), "\x00") {
		if arg == "-D" || strings.HasPrefix(arg, "-D") && len(arg) > 2 || strings.HasPrefix(arg, "--pgdata") {
			return true
		}
	}
	return false
}

// childPids lists the processes whose parent is ppid.
func childPids(ppid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if parent, ok := parentPid(pid); ok && parent == ppid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// parentPid reads the parent of pid from /proc/pid/stat.
func parentPid(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	// The command name is in parentheses and may itself contain spaces or
	// parentheses: the fields after it start after the last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return 0, false
	}
	return ppid, true
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return false
	}
	fields := strings.Fields(s[i+1:])
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

// stopTree freezes the postmaster first, so it cannot fork, then every
// child. It returns the children it stopped.
func stopTree(pid int) ([]int, error) {
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return nil, fmt.Errorf("SIGSTOP postmaster %d: %w", pid, err)
	}
	children := childPids(pid)
	for _, c := range children {
		_ = syscall.Kill(c, syscall.SIGSTOP)
	}
	return children, nil
}

// continueTree resumes the children, then the postmaster.
func continueTree(pid int) error {
	for _, c := range childPids(pid) {
		_ = syscall.Kill(c, syscall.SIGCONT)
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		return fmt.Errorf("SIGCONT postmaster %d: %w", pid, err)
	}
	return nil
}

// killTree SIGKILLs the postmaster's children while the postmaster is frozen,
// then the postmaster. It returns the children, which the caller reaps once
// the postmaster itself has been waited for.
func killTree(pid int) []int {
	children, _ := stopTree(pid)
	for _, c := range children {
		_ = syscall.Kill(c, syscall.SIGKILL)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return children
}

// reap waits for orphaned children that were reparented to this process.
// Children reparented elsewhere are only waited for until they are gone.
func reap(pids []int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for {
			var ws syscall.WaitStatus
			got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
			if got == pid || errors.Is(err, syscall.ECHILD) && !processAlive(pid) {
				break
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// serverCredential returns the credential to run PostgreSQL programs with:
// nil when not root, the postgres user's when root (PostgreSQL refuses to run
// as root).
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as the postgres user, which was not found: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres user uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres user gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// sysProcAttr runs a program as cred, and for servers ties its life to this
// process: if the test process dies the postmaster gets SIGKILL, and its
// backends exit when they see the postmaster gone.
func sysProcAttr(cred *syscall.Credential, server bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Credential: cred}
	if server {
		a.Pdeathsig = syscall.SIGKILL
		a.Setpgid = true
	}
	return a
}

// chownTree gives path and everything below it to cred's user.
func chownTree(path string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	return walkChown(path, int(cred.Uid), int(cred.Gid))
}

func walkChown(path string, uid, gid int) error {
	if err := os.Lchown(path, uid, gid); err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	if err != nil || !fi.IsDir() {
		return err
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := walkChown(path+"/"+e.Name(), uid, gid); err != nil {
			return err
		}
	}
	return nil
}
