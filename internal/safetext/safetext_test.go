package safetext_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"

	"github.com/pgxha/pgxha/internal/safetext"
)

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"n1":                      "n1",
		"zone-é":                  "zone-é",
		"\x1b[2J\x1b]0;owned\x07": `\x1b[2J\x1b]0;owned\x07`,
		"a\nb\rc\td":              `a\nb\rc\td`,
		"\u009b31m":               `\u009b31m`,
		"bad\xffutf8":             `bad\xffutf8`,
	} {
		assert.Equal(t, want, safetext.Printable(in), "%q", in)
	}
}

func TestPrintableLines(t *testing.T) {
	assert.Equal(t, "line 1\n\tline 2 \\x1b[2J\\r", safetext.PrintableLines("line 1\n\tline 2 \x1b[2J\r"))
}

func TestLabel(t *testing.T) {
	long := strings.Repeat("é", 100) + "\x1b"
	l := safetext.Label(long, 64)
	assert.LessOrEqual(t, len(l), 64)
	assert.True(t, utf8.ValidString(l))
	assert.True(t, strings.HasSuffix(l, "…"))
	assert.Equal(t, "n1", safetext.Label("n1", 64))
}

func TestClip(t *testing.T) {
	assert.Equal(t, "short", safetext.Clip("short", 5))
	assert.Equal(t, "abc... (6 bytes)", safetext.Clip("abcdef", 3))
	// Cut on a character boundary: "é" is two bytes.
	assert.Equal(t, "a... (5 bytes)", safetext.Clip("aééx"[:5], 2))
	assert.Equal(t, "... (3 bytes)", safetext.Clip("abc", 0))
	long := strings.Repeat("é", 5000)
	got := safetext.Clip(long, 2048)
	assert.True(t, utf8.ValidString(got), "cut inside a character")
	assert.Less(t, len(got), 2100)
	assert.Contains(t, got, "(10000 bytes)")
}

func TestLabelTinyMax(t *testing.T) {
	assert.NotPanics(t, func() { safetext.Label("abcdef", 1) })
}
