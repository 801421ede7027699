// Package secrets replaces secrets in text that is about to be shown or
// logged.
package secrets

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/pgxha/pgxha/internal/safetext"
)

// ReplaceWhole returns text with each occurrence of secret that stands as a whole
// value replaced by with. An occurrence is part of another word, and stays,
// when a letter, digit or '_' touches it on a side where secret itself
// begins or ends with one: the password "p" is redacted in "u:p@h" and
// "password=p", not in "invalid port".
//
// The forms in which quoting writes secret (see Escaped) are replaced alike.
func ReplaceWhole(text, secret, with string) string {
	text = replaceWhole(text, secret, with)
	for _, f := range Escaped(secret) {
		text = replaceWhole(text, f, with)
	}
	return text
}

// ReplaceAll returns text with every occurrence of secret replaced by
// with, also where other letters touch it, and the forms in which quoting
// writes secret (see Escaped) alike. For text written by a party that may
// have the secret and hide it in a longer word; a short secret would take
// letters out of honest words: see ReplaceWhole.
func ReplaceAll(text, secret, with string) string {
	if secret == "" {
		return text
	}
	text = strings.ReplaceAll(text, secret, with)
	for _, f := range Escaped(secret) {
		text = strings.ReplaceAll(text, f, with)
	}
	return text
}

// Escaped returns the forms other than secret itself in which a text that
// quotes or escapes it shows it: Go's %q and %+q (strconv.Quote and
// QuoteToASCII), once and twice (an error that quotes another's text), a
// JSON string's, and a terminal-safe text's (see safetext.Printable). It
// returns nil, allocating nothing, for a secret of printable ASCII that
// none of them escapes.
func Escaped(secret string) []string {
	plain := true
	for i := 0; i < len(secret); i++ {
		switch c := secret[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			plain = false
		}
	}
	if plain {
		return nil
	}
	inner := func(q string) string { return q[1 : len(q)-1] }
	q, a := inner(strconv.Quote(secret)), inner(strconv.QuoteToASCII(secret))
	forms := []string{q, a, inner(strconv.Quote(q)), inner(strconv.QuoteToASCII(a)), safetext.Printable(secret)}
	if j, err := json.Marshal(secret); err == nil {
		forms = append(forms, inner(string(j)))
	}
	var out []string
	for _, f := range forms {
		if f != secret && f != "" && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

func replaceWhole(text, secret, with string) string {
	if secret == "" || !strings.Contains(text, secret) {
		return text
	}
	first, _ := utf8.DecodeRuneInString(secret)
	last, _ := utf8.DecodeLastRuneInString(secret)
	wordStart, wordEnd := isWord(first), isWord(last)
	var b strings.Builder
	rest := text
	for {
		i := strings.Index(rest, secret)
		if i < 0 {
			b.WriteString(rest)
			return b.String()
		}
		j := i + len(secret)
		prev := rest[:i]
		if i == 0 {
			prev = b.String() // what was written so far (no copy)
		}
		before, _ := utf8.DecodeLastRuneInString(prev)
		after, _ := utf8.DecodeRuneInString(rest[j:])
		glued := wordStart && prev != "" && isWord(before) || wordEnd && j < len(rest) && isWord(after)
		if glued {
			// Not a whole value: keep its first rune, look again after it.
			_, size := utf8.DecodeRuneInString(rest[i:])
			b.WriteString(rest[:i+size])
			rest = rest[i+size:]
			continue
		}
		b.WriteString(rest[:i])
		b.WriteString(with)
		rest = rest[j:]
	}
}

func isWord(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)
}
