//go:build pgxold

package hasql

import "github.com/jackc/pgx/v5/pgconn"

// channelBindingRequired: the oldest pgx supported knows no
// channel_binding setting, so connections never require it.
func channelBindingRequired(*pgconn.Config) bool { return false }
