// Command quickstart shows pgxha's main job: one multi-host DSN in, writes
// routed to the master, reads to the replicas, and the roles table.
//
// With no arguments it starts an embedded local cluster (1 master, 1 sync
// replica, 1 async replica); set PGXHA_DSN to use your own cluster instead.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	dsn := os.Getenv("PGXHA_DSN")
	if dsn == "" {
		fmt.Println("Starting a local cluster: 1 master, 1 sync replica, 1 async replica...")
		startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		c, err := testcluster.Start(startCtx, testcluster.Options{Replicas: 2, SyncReplicas: 1})
		cancel()
		if err != nil {
			return err
		}
		defer c.Stop()
		dsn = c.DSN()
	}
	fmt.Println("DSN:", hasql.Redact(dsn, dsn))

	m, err := hasql.New(ctx, dsn, hasql.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		return err
	}
	defer m.Close()
	readyCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := m.WaitReady(readyCtx, 1, 1); err != nil {
		return err
	}

	fmt.Println("\nWrites go to the master:")
	if _, err := m.Master().Exec(ctx, `CREATE TABLE IF NOT EXISTS quickstart (id bigserial PRIMARY KEY, note text, at timestamptz DEFAULT now())`); err != nil {
		return err
	}
	// The replicas replay the new table a moment later: wait until every
	// replica has, so that reads find it.
	if err := m.WaitCaughtUp(readyCtx); err != nil {
		return err
	}
	for i := 1; i <= 3; i++ {
		conn, err := m.AcquireMaster(ctx)
		if err != nil {
			return err
		}
		var id int64
		err = conn.QueryRow(ctx, "INSERT INTO quickstart (note) VALUES ($1) RETURNING id", "write "+strconv.Itoa(i)).Scan(&id)
		fmt.Printf("  INSERT id %-4d served by %s\n", id, served(ctx, conn))
		conn.Release()
		if err != nil {
			return err
		}
	}
	lsn, err := m.CurrentLSN(ctx)
	if err != nil {
		return err
	}

	fmt.Println("\nReads go to the replicas (round robin):")
	for i := 1; i <= 4; i++ {
		conn, err := m.AcquireReplica(ctx)
		if err != nil {
			return err
		}
		var n int
		err = conn.QueryRow(ctx, "SELECT count(*) FROM quickstart").Scan(&n)
		fmt.Printf("  SELECT count(*) = %-4d served by %s\n", n, served(ctx, conn))
		conn.Release()
		if err != nil {
			return err
		}
	}

	fmt.Printf("\nRead your writes (MinLSN %s: only replicas that replayed the last write):\n", lsn)
	conn, err := m.AcquireReplica(ctx, hasql.MinLSN(lsn), hasql.FallbackToMaster())
	if err != nil {
		return err
	}
	var last string
	err = conn.QueryRow(ctx, "SELECT note FROM quickstart ORDER BY id DESC LIMIT 1").Scan(&last)
	fmt.Printf("  last note %q served by %s\n", last, served(ctx, conn))
	conn.Release()
	if err != nil {
		return err
	}

	fmt.Println("\nSynchronous replicas only:")
	conn, err = m.AcquireReplica(ctx, hasql.SyncOnly())
	if err != nil {
		return err
	}
	fmt.Printf("  served by %s\n", served(ctx, conn))
	conn.Release()

	fmt.Println("\nRoles, as the manager sees them:")
	printNodes(m.Nodes())
	return nil
}

// served names the node a connection reaches: its address and the server's
// own cluster_name.
func served(ctx context.Context, conn *pgxpool.Conn) string {
	cfg := conn.Conn().Config()
	var name string
	var inRecovery bool
	_ = conn.QueryRow(ctx, "SELECT current_setting('cluster_name'), pg_is_in_recovery()").Scan(&name, &inRecovery)
	role := "master"
	if inRecovery {
		role = "replica"
	}
	return fmt.Sprintf("%s:%d (%s, %s)", cfg.Host, cfg.Port, name, role)
}

func printNodes(nodes []hasql.NodeStatus) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "  ADDRESS\tNAME\tROLE\tSYNC STATE\tTIMELINE\tLSN\tLAG BYTES\tLAG\tCHECK")
	for _, n := range nodes {
		lagBytes, lag := "-", "-"
		if n.Role.IsReplica() && n.LagKnown {
			lagBytes, lag = strconv.FormatInt(n.LagBytes, 10), n.Lag.Round(time.Millisecond).String()
		}
		sync := n.SyncState
		if sync == "" {
			sync = "-"
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", n.Addr, n.Name, n.Role, sync, n.Timeline, n.LSN,
			lagBytes, lag, n.CheckLatency.Round(10*time.Microsecond))
	}
	w.Flush()
}
