package testcluster

// serverProcess is what a backend that runs PostgreSQL on this machine
// tells of a node's server (the local and Patroni backends; compose keeps
// both inside a container).
type serverProcess interface {
	dataDirectory() string
	postmasterPID() int // 0 when it does not run
}

// DataDir is the node's data directory on this machine, "" when its backend
// keeps it elsewhere (compose: inside the container).
func (n *Node) DataDir() string {
	if p, ok := n.drv.(serverProcess); ok {
		return p.dataDirectory()
	}
	return ""
}

// PID is the process ID of the node's postmaster, 0 when it does not run or
// its backend runs it elsewhere (compose). A paused node keeps its PID.
func (n *Node) PID() int {
	if p, ok := n.drv.(serverProcess); ok {
		return p.postmasterPID()
	}
	return 0
}

func (l *localNode) dataDirectory() string { return l.dataDir }

func (l *localNode) postmasterPID() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.runningLocked() {
		return 0
	}
	return l.cmd.Process.Pid
}

func (n *patroniNode) dataDirectory() string { return n.dataDir }
func (n *patroniNode) postmasterPID() int    { return n.postmasterPid() }
