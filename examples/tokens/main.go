// Command tokens shows read-your-writes across requests and processes with
// hasql.Token: an HTTP middleware keeps each user's token in a cookie, so a
// user reads their own writes on the next request, whichever service
// instance serves it; a job carries the token of the write it follows up,
// so a worker on another machine reads it. Replay is paused on every
// replica to show it: reads with the token go to the master until a
// replica has the write, then back to the replicas.
//
//	go run ./examples/tokens
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgxha/pgxha/examples/internal/democluster"
	"github.com/pgxha/pgxha/hasql"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "tokens:", err)
		os.Exit(1)
	}
}

// handler is the service: one instance per Manager.
func handler(m *hasql.Manager, jobs chan<- []byte) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /comments", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<10))
		if r.URL.Query().Get("notify") != "" {
			job, err := enqueueComment(r.Context(), m, string(body))
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			jobs <- job
			w.WriteHeader(http.StatusAccepted)
			return
		}
		var id int64
		tx, err := m.Master().Begin(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer tx.Rollback(r.Context())
		if err := tx.QueryRow(r.Context(), "INSERT INTO comments (body) VALUES ($1) RETURNING id", string(body)).Scan(&id); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		// Commit, and the write's token, read on its connection: a
		// failover meanwhile cannot give the user a token of another
		// master.
		tok, err := hasql.CommitToken(r.Context(), tx)
		if err != nil && !errors.Is(err, hasql.ErrTokenUnread) {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		Wrote(r, tok)
		w.Header().Set("Location", fmt.Sprintf("/comments/%d", id))
		w.WriteHeader(http.StatusCreated)
	})
	mux.HandleFunc("GET /comments/{id}", func(w http.ResponseWriter, r *http.Request) {
		var body, node string
		var onReplica bool
		err := Reads(m, r).QueryRow(r.Context(),
			"SELECT body, current_setting('cluster_name'), pg_is_in_recovery() FROM comments WHERE id = $1", r.PathValue("id")).
			Scan(&body, &node, &onReplica)
		switch {
		case errors.Is(err, hasql.ErrWriteLost), errors.Is(err, hasql.ErrTokenForeign):
			ForgetToken(w)
			http.Error(w, "your last change was lost in a database failover; please make it again", http.StatusConflict)
		case errors.Is(err, pgx.ErrNoRows):
			http.Error(w, "no such comment", http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			fmt.Fprintf(w, "%q (served by %s, %s)", body, node, role(onReplica))
		}
	})
	mux.Handle("GET /healthz", hasql.HealthHandler(m)) // for the readiness probe
	return ReadYourWrites(m, mux)
}

func run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	dc, err := democluster.Start(ctx)
	if err != nil {
		return err
	}
	defer dc.Stop()
	quiet := hasql.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	// Two service instances and a worker: three processes in real life,
	// three Managers here.
	var ms [3]*hasql.Manager
	for i := range ms {
		if ms[i], err = hasql.New(ctx, dc.DSN, quiet); err != nil {
			return err
		}
		defer ms[i].Close()
		if err := ms[i].WaitReady(ctx, 1, 1); err != nil {
			return err
		}
	}
	web1, web2, worker := ms[0], ms[1], ms[2]
	if _, err := web1.Master().Exec(ctx, "CREATE TABLE IF NOT EXISTS comments (id bigserial PRIMARY KEY, body text)"); err != nil {
		return err
	}
	for _, m := range ms {
		caughtUp, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := m.WaitCaughtUp(caughtUp)
		cancel()
		if err != nil {
			return err
		}
	}

	jobs := make(chan []byte, 1)
	srv1 := httptest.NewServer(handler(web1, jobs))
	defer srv1.Close()
	srv2 := httptest.NewServer(handler(web2, jobs))
	defer srv2.Close()

	if dc.C != nil {
		for _, n := range dc.C.Replicas() {
			if err := n.PauseReplay(ctx); err != nil {
				return err
			}
			defer n.ResumeReplay(context.Background())
		}
		fmt.Println("Replay paused on every replica: they serve reads, but none has what is written next.")
	}

	jar, _ := cookiejar.New(nil)
	user := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	stranger := &http.Client{Timeout: 30 * time.Second}

	resp, err := user.Post(srv1.URL+"/comments", "text/plain", strings.NewReader("first!"))
	if err != nil {
		return err
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	fmt.Printf("POST /comments %q on instance 1 -> %s, cookie %s\n", "first!", resp.Status, cookieOf(jar, srv1.URL))

	// The next request goes to the other instance (the same site for the
	// browser: both are on 127.0.0.1, and cookies ignore the port).
	say := func(who string, c *http.Client, base string) error {
		resp, err := c.Get(base + loc)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("GET %s on instance 2 %-16s -> %s %s\n", loc, who, resp.Status, strings.TrimSpace(string(b)))
		return nil
	}
	if err := say("with the cookie", user, srv2.URL); err != nil {
		return err
	}
	if err := say("without it", stranger, srv2.URL); err != nil {
		return err
	}

	resp, err = user.Post(srv1.URL+"/comments?notify=1", "text/plain", strings.NewReader("second"))
	if err != nil {
		return err
	}
	resp.Body.Close()
	payload := <-jobs
	fmt.Printf("POST /comments?notify=1 %q -> %s; job payload %s\n", "second", resp.Status, payload)
	line, err := work(ctx, worker, payload)
	if err != nil {
		return err
	}
	fmt.Println("job:", line)

	if dc.C != nil {
		for _, n := range dc.C.Replicas() {
			if err := n.ResumeReplay(ctx); err != nil {
				return err
			}
		}
		caughtUp, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := web2.WaitCaughtUp(caughtUp)
		cancel()
		if err != nil {
			return err
		}
		fmt.Println("Replay resumed; the replicas caught up.")
	}
	if err := say("with the cookie", user, srv2.URL); err != nil {
		return err
	}

	resp, err = stranger.Get(srv2.URL + "/healthz")
	if err != nil {
		return err
	}
	var health hasql.Health
	err = json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if err != nil {
		return err
	}
	fmt.Printf("GET /healthz -> %s: status %s, writes %t, reads %t, %d nodes\n",
		resp.Status, health.Status, health.Writes, health.Reads, len(health.Nodes))
	return nil
}

func cookieOf(jar http.CookieJar, base string) string {
	u, _ := url.Parse(base)
	for _, c := range jar.Cookies(u) {
		if c.Name == TokenCookie {
			return c.Name + "=" + c.Value
		}
	}
	return "(none)"
}
