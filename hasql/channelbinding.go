//go:build !pgxold

package hasql

import "github.com/jackc/pgx/v5/pgconn"

// channelBindingRequired reports whether connections require SCRAM with
// channel binding (channel_binding=require), which no server without the
// password and the TLS connection's own certificate can complete.
func channelBindingRequired(cc *pgconn.Config) bool {
	return cc.ChannelBinding == "require"
}

// authSettings checks the run-time parameters for authentication settings
// the pgx of this build cannot enforce (see the pgxold build's): pgx v5.13
// and newer parse require_auth and channel_binding themselves.
func authSettings(map[string]string) error { return nil }
