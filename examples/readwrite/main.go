// Command readwrite is an HTTP service that splits reads from writes with
// pgxha, exports pgxha's OpenTelemetry metrics (stdout exporter), and traces
// queries with otelpgx next to pgxha's own acquire spans, without a second
// span per acquire.
//
// With no arguments it starts an embedded cluster, serves on a free local
// port, makes a few requests to itself, prints the answers, the traces and
// pgxha's metrics, and exits. With -serve it keeps serving until Ctrl-C,
// exporting metrics to stdout every -export interval.
//
//	go run ./examples/readwrite
//	go run ./examples/readwrite -serve -addr 127.0.0.1:8080
//	curl -X POST -d 'hello' localhost:8080/notes; curl localhost:8080/notes
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgxha/pgxha/examples/internal/democluster"
	"github.com/pgxha/pgxha/hasql"
)

func main() {
	serve := flag.Bool("serve", false, "keep serving until Ctrl-C")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	export := flag.Duration("export", 30*time.Second, "with -serve: how often metrics are exported to stdout")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *serve, *addr, *export); err != nil {
		fmt.Fprintln(os.Stderr, "readwrite:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, serve bool, addr string, export time.Duration) error {
	dc, err := democluster.Start(ctx)
	if err != nil {
		return err
	}
	defer dc.Stop()

	// OpenTelemetry: a manual reader for the summary below and, with
	// -serve, the stdout exporter. Spans in memory, printed at the end.
	summary := sdkmetric.NewManualReader()
	mpOpts := []sdkmetric.Option{sdkmetric.WithReader(summary)}
	if serve {
		exp, err := stdoutmetric.New(stdoutmetric.WithPrettyPrint())
		if err != nil {
			return err
		}
		mpOpts = append(mpOpts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(export))))
	}
	mp := sdkmetric.NewMeterProvider(mpOpts...)
	defer mp.Shutdown(context.Background())
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer tp.Shutdown(context.Background())

	cfg, err := hasql.ParseConfig(dc.DSN)
	if err != nil {
		return err
	}
	// otelpgx traces the queries; pgxha traces the acquires and does not
	// pass pool acquires on to otelpgx, so each acquire has one span.
	cfg.PoolConfig.ConnConfig.Tracer = otelpgx.NewTracer(otelpgx.WithTracerProvider(tp))
	cfg.MeterProvider, cfg.TracerProvider = mp, tp
	cfg.MaxLag = 5 * time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m, err := hasql.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.WaitReady(ctx, 1, 1); err != nil {
		return err
	}
	if _, err := m.Master().Exec(ctx, "CREATE TABLE IF NOT EXISTS notes (id bigserial PRIMARY KEY, body text NOT NULL)"); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: traced(tp, handler(m)), ReadHeaderTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "serve:", err)
		}
	}()
	defer func() {
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutCtx)
		wg.Wait()
	}()
	base := "http://" + ln.Addr().String()
	fmt.Println("Serving on", base)

	if serve {
		fmt.Println("POST /notes (body: text), GET /notes, GET /notes/{id}?lsn=..., GET /status; Ctrl-C to stop.")
		<-ctx.Done()
		return nil
	}

	// A short session against ourselves.
	for _, body := range []string{"first note", "second note"} {
		resp, err := http.Post(base+"/notes", "text/plain", strings.NewReader(body))
		if err != nil {
			return err
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("POST /notes %q -> %s %s  (X-LSN %s)\n", body, resp.Status, strings.TrimSpace(string(out)), resp.Header.Get("X-LSN"))
		var created struct{ ID int64 }
		if err := json.Unmarshal(out, &created); err != nil {
			return err
		}
		if err := get(fmt.Sprintf("%s/notes/%d?lsn=%s", base, created.ID, resp.Header.Get("X-LSN"))); err != nil {
			return err
		}
	}
	if err := get(base + "/notes"); err != nil {
		return err
	}

	fmt.Println("\nSpans (otelpgx query spans beside pgxha acquire spans):")
	counts := map[string]int{}
	for _, s := range spans.GetSpans() {
		name := s.Name
		if len(name) > 60 {
			name = name[:57] + "..."
		}
		counts[name]++
	}
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("  %-60s %d\n", n, counts[n])
	}
	fmt.Println("\npgxha metrics:")
	return printMetrics(ctx, summary)
}

// traced gives every request a server span, the parent of pgxha's acquire
// spans and otelpgx's query spans.
func traced(tp *sdktrace.TracerProvider, next http.Handler) http.Handler {
	tracer := tp.Tracer("readwrite")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := tracer.Start(r.Context(), r.Method+" "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func get(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	fmt.Printf("GET %s -> %s %s\n", url[strings.Index(url, "/notes"):], resp.Status, strings.TrimSpace(string(out)))
	return nil
}

func handler(m *hasql.Manager) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /notes", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var id int64
		var lsn hasql.LSN
		tx, err := m.Master().Begin(r.Context())
		if err == nil {
			err = tx.QueryRow(r.Context(), "INSERT INTO notes (body) VALUES ($1) RETURNING id", string(body)).Scan(&id)
			if err == nil {
				err = tx.Commit(r.Context())
			} else {
				tx.Rollback(r.Context())
			}
		}
		if err == nil {
			lsn, err = m.CurrentLSN(r.Context())
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		// The client passes the LSN back to read its own write.
		w.Header().Set("X-LSN", lsn.String())
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"id": id})
	})
	mux.HandleFunc("GET /notes", func(w http.ResponseWriter, r *http.Request) {
		rows, err := m.Replica(hasql.FallbackToMaster()).Query(r.Context(), "SELECT id, body FROM notes ORDER BY id DESC LIMIT 20")
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		type note struct {
			ID   int64  `json:"id"`
			Body string `json:"body"`
		}
		notes, err := pgx.CollectRows(rows, pgx.RowToStructByPos[note])
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(notes)
	})
	mux.HandleFunc("GET /notes/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			http.Error(w, "bad id", http.StatusBadRequest)
			return
		}
		opts := []hasql.ReplicaOption{hasql.FallbackToMaster()}
		if s := r.URL.Query().Get("lsn"); s != "" {
			lsn, err := hasql.ParseLSN(s)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			opts = append(opts, hasql.MinLSN(lsn), hasql.MinLSNWait(500*time.Millisecond))
		}
		var body, node string
		err = m.Replica(opts...).QueryRow(r.Context(), "SELECT body, current_setting('cluster_name') FROM notes WHERE id = $1", id).Scan(&body, &node)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			http.Error(w, "not found", http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		default:
			json.NewEncoder(w).Encode(map[string]any{"id": id, "body": body, "served_by": node})
		}
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(m.Stat())
	})
	return mux
}

// printMetrics prints pgxha's metrics compactly.
func printMetrics(ctx context.Context, r *sdkmetric.ManualReader) error {
	var rm metricdata.ResourceMetrics
	if err := r.Collect(ctx, &rm); err != nil {
		return err
	}
	for _, sm := range rm.ScopeMetrics {
		for _, met := range sm.Metrics {
			switch d := met.Data.(type) {
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					fmt.Printf("  %-30s %-8d %s\n", met.Name, dp.Value, attrs(dp.Attributes))
				}
			case metricdata.Gauge[float64]:
				for _, dp := range d.DataPoints {
					fmt.Printf("  %-30s %-8.3f %s\n", met.Name, dp.Value, attrs(dp.Attributes))
				}
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					fmt.Printf("  %-30s %-8d %s\n", met.Name, dp.Value, attrs(dp.Attributes))
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					fmt.Printf("  %-30s n=%-6d %s\n", met.Name, dp.Count, attrs(dp.Attributes))
				}
			}
		}
	}
	return nil
}

func attrs(set attribute.Set) string {
	var parts []string
	for _, kv := range set.ToSlice() {
		switch kv.Key {
		case "db.system.name", "db.namespace", "server.address":
			continue
		}
		parts = append(parts, string(kv.Key)+"="+kv.Value.Emit())
	}
	return strings.Join(parts, " ")
}
