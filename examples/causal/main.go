// Command causal shows read-your-writes with MinLSN: after a write, reads go
// only to replicas that have replayed it, so a user never reads a state
// older than their own write, even with a replica far behind.
//
//	go run ./examples/causal
package main

import (
	"context"
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
		fmt.Fprintln(os.Stderr, "causal:", err)
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
	if _, err := m.Master().Exec(ctx, "CREATE TABLE IF NOT EXISTS profile (id int PRIMARY KEY, name text)"); err != nil {
		return err
	}
	if _, err := m.Master().Exec(ctx, "INSERT INTO profile VALUES (1, 'v0') ON CONFLICT (id) DO UPDATE SET name = 'v0'"); err != nil {
		return err
	}
	// Every replica has the row before one of them is paused.
	caughtUp, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := m.WaitCaughtUp(caughtUp); err != nil {
		return err
	}
	if dc.C != nil {
		lagging := dc.C.Nodes()[2]
		fmt.Printf("Replay paused on %s: it keeps serving reads, but falls behind.\n", lagging.Addr())
		if err := lagging.PauseReplay(ctx); err != nil {
			return err
		}
		defer lagging.ResumeReplay(context.Background())
	}

	stale := 0
	for i := 1; i <= 10; i++ {
		name := fmt.Sprintf("v%d", i)
		tx, err := m.Master().Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE profile SET name = $1 WHERE id = 1", name); err != nil {
			tx.Rollback(ctx)
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		lsn, err := m.CurrentLSN(ctx) // at or past the commit
		if err != nil {
			return err
		}

		var plain, causal, plainNode, causalNode string
		if err := m.Replica().QueryRow(ctx, "SELECT name, current_setting('cluster_name') FROM profile WHERE id = 1").Scan(&plain, &plainNode); err != nil {
			return err
		}
		if err := m.Replica(hasql.MinLSN(lsn), hasql.FallbackToMaster(), hasql.MinLSNWait(time.Second)).
			QueryRow(ctx, "SELECT name, current_setting('cluster_name') FROM profile WHERE id = 1").Scan(&causal, &causalNode); err != nil {
			return err
		}
		mark := ""
		if plain != name {
			stale++
			mark = "  <- stale"
		}
		fmt.Printf("wrote %-4s at %-10s  plain replica read: %-4s (%s)%s\n", name, lsn, plain, plainNode, mark)
		fmt.Printf("%24s MinLSN read:        %-4s (%s)\n", "", causal, causalNode)
		if causal != name {
			return fmt.Errorf("MinLSN read %q after writing %q", causal, name)
		}
	}
	fmt.Printf("\nPlain replica reads were stale %d times out of 10; MinLSN reads never were.\n", stale)
	return nil
}
