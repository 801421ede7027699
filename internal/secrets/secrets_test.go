package secrets_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

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
