//go:build !pgxold

package hasql

import "github.com/jackc/pgx/v5/pgconn"

// channelBindingRequired reports whether connections require SCRAM with
// channel binding (channel_binding=require), which no server without the
// password and the TLS connection's own certificate can complete.
func channelBindingRequired(cc *pgconn.Config) bool {
	return cc.ChannelBinding == "require"
}
