//go:build !linux

package hasql

import (
	"net"
	"time"
)

// setUserTimeout does nothing where TCP_USER_TIMEOUT is not available: the
// keepalive probes alone close a silent connection.
func setUserTimeout(*net.TCPConn, time.Duration) error { return nil }
