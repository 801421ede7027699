// Command listen shows LISTEN/NOTIFY that follows the master: notifications
// keep coming after a failover, and the switch is reported as a possible gap.
//
//	go run ./examples/listen
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/pgxha/pgxha/examples/internal/democluster"
	"github.com/pgxha/pgxha/hasql"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	dc, err := democluster.Start(ctx)
	if err != nil {
		return err
	}
	defer dc.Stop()
	m, err := hasql.New(ctx, dc.DSN, hasql.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.WaitReady(ctx, 1, 1); err != nil {
		return err
	}
	l, err := m.Listen(ctx, "orders")
	if err != nil {
		return err
	}
	defer l.Close()

	notify := func(payload string) error {
		_, err := m.Master().Exec(ctx, "SELECT pg_notify('orders', $1)", payload)
		return err
	}
	receive := func() error {
		n, err := l.Receive(ctx)
		var missed *hasql.MissedError
		switch {
		case errors.As(err, &missed):
			fmt.Printf("  ! listening again, now on %s; notifications sent in the %s gap may be lost\n",
				missed.To, missed.Resumed.Sub(missed.Lost).Round(time.Millisecond))
			return nil
		case err != nil:
			return err
		}
		fmt.Printf("  received %q on %s from the master %s\n", n.Payload, n.Channel, n.Node)
		return nil
	}

	fmt.Println("Notifications from the master:")
	for _, p := range []string{"order 1", "order 2"} {
		if err := notify(p); err != nil {
			return err
		}
		if err := receive(); err != nil {
			return err
		}
	}
	if dc.C == nil {
		return nil // no failover on someone else's cluster
	}
	old, next := dc.C.Master(), dc.C.Nodes()[1]
	fmt.Printf("\nThe master %s crashes; %s is promoted.\n", old.Addr(), next.Addr())
	if err := old.Kill(); err != nil {
		return err
	}
	if err := dc.C.Failover(ctx, next); err != nil {
		return err
	}
	if err := receive(); err != nil { // the gap
		return err
	}
	for _, p := range []string{"order 3", "order 4"} {
		if err := notify(p); err != nil {
			return err
		}
		if err := receive(); err != nil {
			return err
		}
	}
	return nil
}
