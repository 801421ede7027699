package hasql

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// A rogue node answers sixteen made-up SQLSTATEs once each (it may stay a
// moment and go); afterwards an honest master's authentication failure
// (28P01) and too-many-connections (53300) must still be told apart in
// error.type, not folded into "pool" for the Manager's lifetime.
func TestCommonSQLStatesOutliveARoguesCodes(t *testing.T) {
	var tel telemetry
	ctx := context.Background()
	for i := range maxSQLStates {
		tel.errorType(ctx, &pgconn.PgError{Code: fmt.Sprintf("ZZ%03d", i)})
	}
	for _, code := range []string{"28P01", "53300"} {
		if got := tel.errorType(ctx, &pgconn.PgError{Code: code}); got != code {
			t.Errorf("error.type of an honest %s after a rogue's %d codes: %q", code, maxSQLStates, got)
		}
	}
}
