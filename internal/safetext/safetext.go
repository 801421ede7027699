// Package safetext makes text that servers and discovery sources control
// safe to print on a terminal or to use as a metric label.
package safetext

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Printable returns s with every control character (terminal escapes
// included: ESC, CSI, BEL, carriage return, line feed) and every byte that
// is not UTF-8 written as a Go escape (\x1b, \n, \u009b), so that printing
// it cannot move the cursor, recolour or rewrite the screen. Other text is
// kept as it is.
func Printable(s string) string { return printable(s, false) }

// PrintableLines is Printable but keeps line feeds and tabs, for messages
// of several lines.
func PrintableLines(s string) string { return printable(s, true) }

func printable(s string, lines bool) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) && !(lines && (r == '\n' || r == '\t')) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case lines && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x80 && unicode.IsControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Label returns s as a metric label value: Printable, then cut to at most
// max bytes (on a character boundary), with "…" marking a cut.
func Label(s string, max int) string {
	s = Printable(s)
	if len(s) <= max {
		return s
	}
	return s[:runeCut(s, max-len("…"))] + "…"
}

// Clip returns s cut to at most max bytes (on a character boundary)
// followed by "... (N bytes)", N being the length s had, or s itself when
// it is no longer than max: for text a server or a discovery source
// controls that goes into an error or a log line.
func Clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return s[:runeCut(s, max)] + "... (" + strconv.Itoa(len(s)) + " bytes)"
}

// runeCut returns the largest index of s at most maxLen that starts a
// character (0 when none does); maxLen < len(s).
func runeCut(s string, maxLen int) int {
	cut := max(maxLen, 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return cut
}
