package hasql

import (
	"net"
	"time"
)

// maxKeepAlive is the longest keepalive time the kernels take (Linux:
// 32767 s).
const maxKeepAlive = 32767 * time.Second

// watchSilence has the kernel watch c, a check connection, for silence
// (see Config.CheckKeepAlive): keepalive probes after d without a byte
// from the server and every d after that, the connection closed when two
// go unanswered; on Linux, TCP_USER_TIMEOUT of userTimeout (at least 3d)
// closes it too when bytes sent stay unacknowledged that long. A
// connection that is not TCP (a Unix socket, or one a DialFunc of the
// user's wraps) is left as it is.
func watchSilence(c net.Conn, d, userTimeout time.Duration) error {
	tc, ok := c.(*net.TCPConn)
	if !ok || d <= 0 {
		return nil
	}
	if err := tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: d, Interval: d, Count: 2}); err != nil {
		return err
	}
	return setUserTimeout(tc, max(3*d, userTimeout))
}
