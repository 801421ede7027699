package hasql

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/pgxha/pgxha/internal/secrets"
)

// HealthOption changes what HealthHandler reports.
type HealthOption func(*healthConfig)

type healthConfig struct {
	reads bool
}

// HealthServesReads makes HealthHandler answer 200 while reads can be
// served (a master, or a replica that qualifies for a plain read), not
// only while there is a master: for the readiness probe of a service that
// keeps serving reads through a failover.
func HealthServesReads() HealthOption { return func(c *healthConfig) { c.reads = true } }

// HealthHandler returns an http.Handler for readiness probes and for
// people: a GET (or HEAD) answers 200 while the Manager knows a master it
// sends writes to (with HealthServesReads, while reads can be served) and
// 503 otherwise, with a JSON body describing the Manager's view and every
// node (role, up, lag, timeline, position, last error). It runs no
// statement: it reads the view the Manager's checks keep. Other methods get
// 405. No password appears in its output: errors are shown with the
// connection string's password removed, as everywhere in pgxha.
func HealthHandler(m *Manager, opts ...HealthOption) http.Handler {
	var c healthConfig
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return &healthHandler{m: m, cfg: c, pw: m.cfg.PoolConfig.ConnConfig.Password}
}

type healthHandler struct {
	m   *Manager
	cfg healthConfig
	pw  string // removed from every text shown
}

// Health is the JSON body of HealthHandler.
type Health struct {
	// Status is "ok" (answered 200) or "unavailable" (503).
	Status string `json:"status"`
	// Writes: a master takes writes. Reads: a replica (or the master)
	// serves plain reads.
	Writes bool `json:"writes"`
	Reads  bool `json:"reads"`
	// Master is the master's address, "" when there is none.
	Master string `json:"master,omitempty"`
	// Error says why writes are refused (a split brain, stale masters).
	Error string       `json:"error,omitempty"`
	Nodes []HealthNode `json:"nodes"`
}

// HealthNode is one node in Health.
type HealthNode struct {
	Addr         string            `json:"addr"`
	Name         string            `json:"name,omitempty"`
	Role         string            `json:"role"`
	Up           bool              `json:"up"`
	Suspect      bool              `json:"suspect,omitempty"`
	SyncState    string            `json:"sync_state,omitempty"`
	SyncUnknown  string            `json:"sync_unknown,omitempty"`
	Detached     string            `json:"detached,omitempty"`
	Waiting      string            `json:"waiting,omitempty"`
	SplitBrain   bool              `json:"split_brain,omitempty"`
	SameAs       string            `json:"same_as,omitempty"`
	Timeline     uint32            `json:"timeline,omitempty"`
	LSN          string            `json:"lsn,omitempty"`
	ReplayPaused bool              `json:"replay_paused,omitempty"`
	LagBytes     *int64            `json:"lag_bytes,omitempty"`
	LagMS        *float64          `json:"lag_ms,omitempty"`
	Tags         map[string]string `json:"tags,omitempty"`
	LastCheck    *time.Time        `json:"last_check,omitempty"`
	CheckMS      float64           `json:"check_ms,omitempty"`
	LastError    string            `json:"last_error,omitempty"`
}

func (h *healthHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body := h.health()
	code := http.StatusOK
	if body.Status != "ok" {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if r.Method == http.MethodHead {
		return
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(body) // the status is sent; a client gone is nothing to report
}

func (h *healthHandler) health() Health {
	s := h.m.snap.Load()
	var out Health
	out.Writes = !s.closed && s.master != nil && s.masterErr == nil
	out.Reads = !s.closed && (out.Writes || len(s.sets[setReplicas].nodes) > 0)
	if out.Writes {
		out.Master = s.master.cfg.Addr
	}
	switch {
	case s.closed:
		out.Error = ErrClosed.Error()
	case s.masterErr != nil:
		out.Error = h.clean(s.masterErr.Error())
	case s.staleErr != nil && !out.Writes:
		out.Error = h.clean(s.staleErr.Error())
	}
	out.Status = "unavailable"
	if out.Writes || h.cfg.reads && out.Reads {
		out.Status = "ok"
	}
	for _, st := range h.m.Nodes() {
		n := HealthNode{
			Addr: st.Addr, Name: st.Name, Role: st.Role.String(), Up: st.Up, Suspect: st.Suspect,
			SyncState: st.SyncState, SyncUnknown: st.SyncUnknown, Detached: h.clean(st.Detached), Waiting: h.clean(st.Waiting),
			SplitBrain: st.SplitBrain, SameAs: st.SameAs, Timeline: st.Timeline,
			ReplayPaused: st.ReplayPaused, Tags: st.Tags,
			CheckMS: float64(st.CheckLatency.Microseconds()) / 1000,
		}
		if st.LSN != 0 {
			n.LSN = st.LSN.String()
		}
		if st.LagKnown {
			b, ms := st.LagBytes, float64(st.Lag.Microseconds())/1000
			n.LagBytes, n.LagMS = &b, &ms
		}
		if !st.LastCheck.IsZero() {
			at := st.LastCheck.UTC()
			n.LastCheck = &at
		}
		if st.LastError != nil {
			n.LastError = h.clean(st.LastError.Error())
		}
		out.Nodes = append(out.Nodes, n)
	}
	return out
}

// clean removes the password from text (errors are redacted where they are
// made; this is the last line).
func (h *healthHandler) clean(text string) string {
	if h.pw == "" {
		return text
	}
	return secrets.ReplaceWhole(text, h.pw, "xxxxx")
}
