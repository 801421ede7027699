//go:build pgxold

package hasql

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// channelBindingRequired: the oldest pgx supported knows no
// channel_binding setting, so connections never require it.
func channelBindingRequired(*pgconn.Config) bool { return false }

// authSettings refuses what the oldest pgx supported (v5.8) cannot
// enforce. It knows neither require_auth nor channel_binding and leaves
// them in params, run-time parameters sent in the startup message; a
// PostgreSQL server reads those only after authentication (the password
// is sent first, then the setting refused) and a rogue one not at all.
// channel_binding=disable or prefer asks for no protection and is dropped:
// the server would refuse the parameter.
func authSettings(params map[string]string) error {
	if v, ok := params["require_auth"]; ok {
		return fmt.Errorf("hasql: require_auth=%s: this build's pgx (older than v5.13) does not enforce it: it would reach the server after the password; use pgx v5.13 or newer", v)
	}
	switch v, ok := params["channel_binding"]; {
	case !ok:
	case v == "disable" || v == "prefer":
		delete(params, "channel_binding")
	default:
		return fmt.Errorf("hasql: channel_binding=%s: this build's pgx (older than v5.13) does not enforce it: it would reach the server after the password; use pgx v5.13 or newer", v)
	}
	return nil
}
