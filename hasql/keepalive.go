package hasql

import (
	"net"
	"time"
)

// watchSilence has the kernel watch c, a check connection, for silence
// (see Config.CheckKeepAlive): keepalive probes after d without a byte
// from the server and every d after that, the connection closed when one
// goes unanswered; on Linux, TCP_USER_TIMEOUT d closes it too when bytes
// sent stay unacknowledged for d. A connection that is not TCP (a Unix
// socket, or one a DialFunc of the user's wraps) is left as it is.
func watchSilence(c net.Conn, d time.Duration) error {
	tc, ok := c.(*net.TCPConn)
	if !ok || d <= 0 {
		return nil
	}
	if err := tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: d, Interval: d, Count: 1}); err != nil {
		return err
	}
	return setUserTimeout(tc, d)
}
