package failover_test

import (
	"context"
	"errors"
	"log"

	"github.com/jackc/pgx/v5"

	"github.com/pgxha/pgxha/failover"
	"github.com/pgxha/pgxha/hasql"
)

// RunInTx runs the transaction again on the new master when a failover
// made it fail before anything committed; a COMMIT whose outcome is unknown
// is never run again.
func ExampleRunInTx() {
	var m *hasql.Manager // from hasql.New
	ctx := context.Background()
	err := failover.RunInTx(ctx, m, failover.Options{}, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance - 10 WHERE id = 1"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance + 10 WHERE id = 2")
		return err
	})
	switch {
	case errors.Is(err, failover.ErrCommitUnknown):
		// It may have committed: look before doing it again.
	case err != nil:
		log.Print(err)
	}
}
