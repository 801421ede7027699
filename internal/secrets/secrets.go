// Package secrets replaces secrets in text that is about to be shown or
// logged.
package secrets

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// ReplaceWhole returns text with each occurrence of secret that stands as a whole
// value replaced by with. An occurrence is part of another word, and stays,
// when a letter, digit or '_' touches it on a side where secret itself
// begins or ends with one: the password "p" is redacted in "u:p@h" and
// "password=p", not in "invalid port".
func ReplaceWhole(text, secret, with string) string {
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
