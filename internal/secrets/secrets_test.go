package secrets_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/pgxha/pgxha/internal/safetext"
	"github.com/pgxha/pgxha/internal/secrets"
)

func TestReplaceWhole(t *testing.T) {
	for _, tc := range []struct {
		text, secret, want string
	}{
		{"invalid port", "p", "invalid port"},
		{"postgres://u:p@h/db", "p", "postgres://u:xxxxx@h/db"},
		{"password=p user=u", "p", "password=xxxxx user=u"},
		{"p", "p", "xxxxx"},
		{"pp p", "p", "pp xxxxx"},
		{"secret secrets secret", "secret", "xxxxx secrets xxxxx"},
		{"a!b!c", "!b!", "axxxxxc"},     // no letter at its edges: anywhere
		{"x!bq", "!b", "x!bq"},          // ends with a letter, glued to q
		{"é-p-é", "p", "é-xxxxx-é"},     // runes, not bytes
		{"élan", "é", "élan"},           // glued to a letter
		{"pppp", "pp", "pppp"},          // never a whole value
		{"'p'", "p", "'xxxxx'"},         // quoted
		{"(p,p)", "p", "(xxxxx,xxxxx)"}, // punctuation on both sides
		{"nothing here", "", "nothing here"},
	} {
		assert.Equal(t, tc.want, secrets.ReplaceWhole(tc.text, tc.secret, "xxxxx"), "%q in %q", tc.secret, tc.text)
	}
}

func FuzzReplaceWhole(f *testing.F) {
	f.Add("invalid port: u:p@h", "p")
	f.Add("secret", "secret")
	f.Add("éé", "é")
	f.Fuzz(func(t *testing.T, text, secret string) {
		out := secrets.ReplaceWhole(text, secret, "\x00")
		// A whole-value occurrence never survives; what stays is glued to
		// a word on an edge where the secret has a word character.
		if secret != "" && text == secret && out != "\x00" {
			t.Fatalf("the text is the secret, yet %q", out)
		}
		if !strings.Contains(text, secret) && out != text {
			t.Fatalf("no secret, text changed: %q -> %q", text, out)
		}
	})
}

// TestReplaceWholeReplacesEscapedForms: a secret that quoting escapes
// (a '"', a '\', a control byte, a byte past ASCII) is replaced in the
// forms Go's %q and %+q (once and twice), JSON and a terminal-safe text
// write it in; a secret none of them escapes costs no allocation.
func TestReplaceWholeReplacesEscapedForms(t *testing.T) {
	for _, secret := range []string{`s3"cr\et`, "pa\x1bss", "pässwörd", "a<b>&c"} {
		q := strconv.Quote(secret)
		j, _ := json.Marshal(secret)
		for _, text := range []string{
			"invalid LSN " + q,
			"wrapped: " + strconv.Quote("invalid LSN "+q),
			"ascii " + strconv.QuoteToASCII(secret),
			"json " + string(j),
			"shown " + safetext.Printable(secret),
		} {
			if got := secrets.ReplaceWhole(text, secret, "xxxxx"); !strings.Contains(got, "xxxxx") {
				t.Errorf("secret %q in %q: not replaced: %q", secret, text, got)
			}
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = secrets.Escaped("plain-Secret_123") }); n != 0 {
		t.Errorf("Escaped of a plain secret: %v allocations", n)
	}
}
