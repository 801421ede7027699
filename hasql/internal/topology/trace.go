package topology

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/pgxha/pgxha/checker"
)

// A trace records every event a core took and what it decided after each:
// replayed into a fresh core, the same events must give the same
// decisions. The Manager writes one with hasql.WithDecisionTrace; the tests
// replay traces of real clusters, so that the simulation's model of
// PostgreSQL is held to what real servers said.

// Entry is one line of a trace: an event and the decisions after it.
type Entry struct {
	// The event: "config", "members", "ok", "failed", "promotion",
	// "forget", "apperror" or "reconsider".
	Kind     string    `json:"kind"`
	At       time.Time `json:"at"`
	ID       ID        `json:"id,omitempty"`
	SystemID uint64    `json:"system_id,omitempty"` // config: the pinned one
	// config: flap damping (see Config).
	FlapCount    int                `json:"flap_count,omitempty"`
	FlapWindow   time.Duration      `json:"flap_window,omitempty"`
	FlapCooldown time.Duration      `json:"flap_cooldown,omitempty"`
	Members      []Member           `json:"members,omitempty"`
	Result       *checker.Result    `json:"result,omitempty"`
	Began        time.Time          `json:"began,omitzero"`
	RemoteIP     string             `json:"remote_ip,omitempty"`
	Err          string             `json:"err,omitempty"`
	Timeout      bool               `json:"timeout,omitempty"`
	Promotion    *checker.Promotion `json:"promotion,omitempty"`

	Decision Decision `json:"decision"`
}

// Decision is what the core decided after an event: the master (None for
// none), every node's role in set order, the nodes whose connections it
// cut, and whether writes were refused for a split brain.
type Decision struct {
	Master     ID     `json:"master"`
	Roles      []Role `json:"roles"`
	Cut        []ID   `json:"cut,omitempty"`
	SplitBrain bool   `json:"split_brain,omitempty"`
	Again      bool   `json:"again,omitempty"`
	Damped     []ID   `json:"damped,omitempty"`
}

func (c *Core) decision(again bool) Decision {
	d := Decision{Master: None, Cut: slices.Clone(c.ready.Cut), SplitBrain: len(c.elected.SplitBrain) > 1, Again: again}
	if m := c.elected.Master; m != nil {
		d.Master = m.ID
	}
	d.Roles = make([]Role, len(c.nodes))
	for i, x := range c.nodes {
		d.Roles[i] = x.Role
		if x.Damped {
			d.Damped = append(d.Damped, x.ID)
		}
	}
	return d
}

func (c *Core) record(e Entry, again bool) {
	if c.cfg.Record == nil {
		return
	}
	e.Decision = c.decision(again)
	c.cfg.Record(e)
}

// WriteTrace returns a Record function that writes each entry to w as a
// line of JSON, and reports the first error it met through errp.
func WriteTrace(w io.Writer, errp *error) func(Entry) {
	enc := json.NewEncoder(w)
	return func(e Entry) {
		if err := enc.Encode(e); err != nil && *errp == nil {
			*errp = err
		}
	}
}

// Replay feeds the events of a trace (read from r, one JSON entry a line)
// into a fresh core and returns the first decision that differs from the
// one recorded, nil when every one is the same. entries is how many it
// read.
func Replay(r io.Reader) (entries int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	var c *Core
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var e Entry
		if err := json.Unmarshal(line, &e); err != nil {
			return entries, fmt.Errorf("trace line %d: %w", entries+1, err)
		}
		entries++
		if c == nil {
			if e.Kind != "config" {
				return entries, fmt.Errorf("trace line 1: %q, want the config entry first", e.Kind)
			}
			c = New(Config{SystemID: e.SystemID, FlapCount: e.FlapCount, FlapWindow: e.FlapWindow, FlapCooldown: e.FlapCooldown})
			continue
		}
		again := false
		switch e.Kind {
		case "members":
			c.SetMembers(e.At, e.Members)
		case "ok":
			if e.Result == nil {
				return entries, fmt.Errorf("trace line %d: a check without its result", entries)
			}
			c.CheckOK(e.ID, *e.Result, e.Began, e.At, e.RemoteIP)
		case "failed":
			again = c.CheckFailed(e.ID, errors.New(e.Err), e.Timeout, e.At)
		case "promotion":
			if e.Promotion == nil {
				return entries, fmt.Errorf("trace line %d: a promotion without what was seen", entries)
			}
			c.PromotionSeen(e.ID, *e.Promotion, e.At)
		case "forget":
			c.ForgetTimeline(e.At)
		case "apperror":
			c.AppError(e.ID, errors.New(e.Err), e.At)
		case "reconsider":
			c.Reconsider(e.At)
		default:
			return entries, fmt.Errorf("trace line %d: unknown event %q", entries, e.Kind)
		}
		got := c.decision(again)
		c.TakeReady()
		if !sameDecision(got, e.Decision) {
			return entries, fmt.Errorf("trace line %d (%s of node %d at %s): decided %+v, the trace says %+v",
				entries, e.Kind, e.ID, e.At.Format(time.RFC3339Nano), got, e.Decision)
		}
	}
	if err := sc.Err(); err != nil {
		return entries, err
	}
	return entries, nil
}

func sameDecision(a, b Decision) bool {
	return a.Master == b.Master && slices.Equal(a.Roles, b.Roles) && slices.Equal(a.Cut, b.Cut) &&
		a.SplitBrain == b.SplitBrain && a.Again == b.Again && slices.Equal(a.Damped, b.Damped)
}
