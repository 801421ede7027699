package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/pgxha/pgxha/hasql"
)

// Escape sequences that clear the terminal and move the cursor home.
const clearScreen = "\x1b[H\x1b[2J"

// shortErrorLen bounds the error column of the table; the full errors follow
// the table.
const shortErrorLen = 60

// writeTable writes rep as a header line (time and summary, then note if
// not empty), a table with one row per node, and the full text of every
// error the table shortened.
func writeTable(w io.Writer, rep report, note string) error {
	var b bytes.Buffer
	header := rep.Time.Format("2006-01-02 15:04:05") + "  " + summaryText(rep.Summary)
	if note != "" {
		header += "  " + note
	}
	b.WriteString(header + "\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tNAME\tROLE\tSYNC STATE\tTIMELINE\tLSN\tLAG BYTES\tLAG TIME\tCHECK\tERROR")
	var details []string
	for _, n := range rep.Nodes {
		errText := ""
		if n.Error != nil {
			errText = shortError(*n.Error)
			if errText != *n.Error {
				details = append(details, "  "+n.Addr+": "+*n.Error)
			}
		}
		for _, why := range []struct {
			what string
			text *string
		}{{"detached", n.Detached}, {"sync unknown", n.SyncUnknown}, {"stale master behind replica", n.StaleBehind}, {"not master yet", n.Waiting}} {
			if why.text != nil {
				details = append(details, "  "+n.Addr+": "+why.what+": "+*why.text)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			n.Addr,
			orDash(n.Name),
			roleText(n),
			orDash(n.SyncState),
			optional(n.Timeline, func(v uint32) string { return strconv.FormatUint(uint64(v), 10) }),
			optional(n.LSN, func(v hasql.LSN) string { return v.String() }),
			optional(n.LagBytes, humanBytes),
			lagText(n),
			optional(n.CheckLatencySeconds, func(float64) string { return humanDuration(n.checkLatency) }),
			errText)
	}
	tw.Flush()
	if rep.SystemIdentifier != nil {
		b.WriteString("system identifier " + *rep.SystemIdentifier + " (pin it: hasql_system_identifier=" + *rep.SystemIdentifier + ")\n")
	}
	if len(details) > 0 {
		b.WriteString("errors:\n")
		for _, d := range details {
			b.WriteString(d + "\n")
		}
	}
	// Strip the padding tabwriter leaves after the last column.
	out := trimLineEnds(b.Bytes())
	_, err := w.Write(out)
	return err
}

// writeJSON writes rep as one JSON document: on one line, or indented.
func writeJSON(w io.Writer, rep report, indent bool) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if indent {
		enc.SetIndent("", "  ")
	}
	if err := enc.Encode(rep); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

// summaryText says how many nodes have each role: "1 master, 1 sync,
// 1 async", then down and unknown nodes when there are any.
func summaryText(s summary) string {
	parts := []string{"no master"}
	if s.Master > 0 {
		parts[0] = strconv.Itoa(s.Master) + " master"
	}
	parts = append(parts, strconv.Itoa(s.Sync)+" sync", strconv.Itoa(s.Async)+" async")
	for _, c := range []struct {
		n    int
		what string
	}{{s.Quorum, "quorum"}, {s.Replica, "replica (sync unknown)"}, {s.Detached, "detached"}, {s.Stale, "stale master"}, {s.Down, "down"}} {
		if c.n > 0 {
			parts = append(parts, strconv.Itoa(c.n)+" "+c.what)
		}
	}
	if s.Unknown > 0 {
		parts = append(parts, strconv.Itoa(s.Unknown)+" unknown")
	}
	return strings.Join(parts, ", ")
}

// roleText is the role column: the role, or why there is none, with what
// qualifies it in parentheses.
func roleText(n nodeReport) string {
	var role string
	switch {
	case n.Role != "unknown":
		role = n.Role
	case n.down:
		role = "down"
	case !n.checked:
		role = "not checked"
	case n.SplitBrain:
		return "split brain (writable, not used)"
	default:
		role = "unknown"
	}
	var notes []string
	if n.Suspect {
		notes = append(notes, "suspect")
	}
	if n.ReplayPaused {
		notes = append(notes, "replay paused")
	}
	if n.SplitBrain {
		notes = append(notes, "split brain")
	}
	if n.SameAs != nil {
		notes = append(notes, "same server as "+*n.SameAs)
	}
	if len(notes) > 0 {
		role += " (" + strings.Join(notes, ", ") + ")"
	}
	return role
}

// lagText is the lag time column: the lag, "unknown" for a replica whose
// lag cannot be measured yet (never 0), "-" where it does not apply.
func lagText(n nodeReport) string {
	if n.lagUnknown {
		return "unknown"
	}
	return optional(n.LagSeconds, func(float64) string { return humanDuration(n.lag) })
}

// shortError fits an error message in the table: whole when short enough,
// otherwise the last one or two ": "-separated parts (the cause), without
// the SQLSTATE, cut at shortErrorLen. A message of several lines (pgx lists
// each address and TLS variant it tried on a line of its own, under a first
// line that ends with ':') is shortened line by line, the first line left
// out, and the distinct causes joined by "; " (the last alone when they do
// not fit).
func shortError(msg string) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(msg), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > 1 && strings.HasSuffix(lines[0], ":") {
		lines = lines[1:]
		for i, l := range lines {
			// "127.0.0.1:5432 (db1): ...": the row names the node.
			lines[i] = attemptPrefix.ReplaceAllString(l, "")
		}
	}
	if len(lines) == 1 && utf8.RuneCountInString(lines[0]) <= shortErrorLen {
		return lines[0]
	}
	var causes []string
	for _, l := range lines {
		if c := errorCause(l); !slices.Contains(causes, c) {
			causes = append(causes, c)
		}
	}
	short := strings.Join(causes, "; ")
	if utf8.RuneCountInString(short) > shortErrorLen {
		// The last attempt's (after TLS was refused, say) says most.
		short = causes[len(causes)-1]
	}
	if utf8.RuneCountInString(short) > shortErrorLen {
		r := []rune(short)
		short = string(r[:shortErrorLen-1]) + "…"
	}
	return short
}

// attemptPrefix is the address and host name pgx puts before the error of
// each attempt.
var attemptPrefix = regexp.MustCompile(`^\S+ \([^)]*\): `)

// errorCause is the last one or two ": "-separated parts of one line of an
// error, as many as fit in shortErrorLen, without the SQLSTATE.
func errorCause(msg string) string {
	if utf8.RuneCountInString(msg) <= shortErrorLen {
		return msg
	}
	// The SQLSTATE is in the full text, after the table.
	if i := strings.LastIndex(msg, " (SQLSTATE "); i > 0 && strings.HasSuffix(msg, ")") {
		msg = msg[:i]
	}
	parts := strings.Split(msg, ": ")
	short := parts[len(parts)-1]
	if len(parts) > 1 {
		if two := parts[len(parts)-2] + ": " + short; utf8.RuneCountInString(two) <= shortErrorLen {
			short = two
		}
	}
	return short
}

// humanBytes formats a byte count with binary units: "0 B", "512 B",
// "1.2 MiB".
func humanBytes(n int64) string {
	if n < 1024 && n > -1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, unit := float64(n)/1024, 0
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	// Move up a unit when rounding would show 1024.0.
	for unit < len(units)-1 && (v >= 1023.95 || v <= -1023.95) {
		v /= 1024
		unit++
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[unit]
}

// humanDuration formats a duration with about two or three significant
// digits: "0s", "350µs", "1.2ms", "35ms", "1.25s", "42.3s", "2m05s",
// "3h07m".
func humanDuration(d time.Duration) string {
	if d < 0 {
		return "-" + humanDuration(-d)
	}
	switch {
	case d == 0:
		return "0s"
	case d < time.Microsecond:
		return strconv.FormatInt(int64(d), 10) + "ns"
	case d < time.Millisecond:
		return strconv.FormatInt(int64(d/time.Microsecond), 10) + "µs"
	case d < 10*time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
	case d < time.Second:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	case d < 10*time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	default:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
}

func orDash(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

func optional[T any](v *T, format func(T) string) string {
	if v == nil {
		return "-"
	}
	return format(*v)
}

func trimLineEnds(b []byte) []byte {
	lines := bytes.Split(b, []byte("\n"))
	for i, l := range lines {
		lines[i] = bytes.TrimRight(l, " ")
	}
	return bytes.Join(lines, []byte("\n"))
}
