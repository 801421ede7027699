package hasql_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
)

func TestTokenText(t *testing.T) {
	for _, tok := range []hasql.Token{
		{LSN: 0x3000148, Timeline: 1, SystemID: 7312345678901234567},
		{LSN: 0, Timeline: 2, SystemID: 0},
		{LSN: 1<<64 - 1, Timeline: 1<<32 - 1, SystemID: 1<<64 - 1},
	} {
		s := tok.String()
		assert.LessOrEqual(t, len(s), 45, s)
		assert.Equal(t, url.QueryEscape(s), s, "needs no escaping in a URL")
		c := http.Cookie{Name: "t", Value: s}
		assert.NoError(t, c.Valid(), "a valid cookie value")
		got, err := hasql.ParseToken(s)
		require.NoError(t, err, s)
		assert.Equal(t, tok, got, s)
		b, err := json.Marshal(tok)
		require.NoError(t, err)
		var back hasql.Token
		require.NoError(t, json.Unmarshal(b, &back))
		assert.Equal(t, tok, back)
	}
	assert.Equal(t, "v1.2.3000148.a", hasql.Token{LSN: 0x3000148, Timeline: 2, SystemID: 10}.String())
	assert.Equal(t, "", hasql.Token{}.String())
}

func TestParseTokenRejects(t *testing.T) {
	for s, why := range map[string]string{
		"":                            "empty",
		"v2.1.0.0":                    "unknown version",
		"v1.1.0":                      "want v1.<timeline>",
		"v1.1.0.0.0":                  "want v1.<timeline>",
		"v1.0.10.5":                   "timeline 0 out of range",
		"v1.100000000.10.5":           "timeline 100000000 out of range",
		"v1.1.1G.5":                   "lsn: 'G' is not",
		"v1.1.1A.5":                   "lsn: 'A' is not",
		"v1.01.10.5":                  "timeline: leading zero",
		"v1.1..5":                     "lsn: empty",
		"v1.1.10.12345678901234567":   "system id: more than 16",
		"v1.1.+10.5":                  "lsn: '+' is not",
		strings.Repeat("v1.", 30):     "longer than any token",
		"v1.1.10.5\x00":               "system id",
		"v1.1.10.5; Path=/":           "system id",
		"v1.1.ffffffffffffffff.-1":    "system id",
		"v1\u00e9.1.10.5":             "unknown version",
		"v1.ffffffff.10.0000":         "system id: leading zero",
		"V1.1.10.5":                   "unknown version",
		"v1.1.10.5.":                  "want v1.<timeline>",
		".v1.1.10.5":                  "unknown version",
		"v1.1.10.5 ":                  "system id",
		"v1.1.10. 5":                  "system id",
		"v1.1.10.5\n":                 "system id",
		"v1.1.1_0.5":                  "lsn",
		"v1.1.1-0.5":                  "lsn",
		"v1.1.0x10.5":                 "lsn",
		"v1.-1.10.5":                  "timeline",
		"v1.1.10.fffffffffffffffff":   "system id: more than 16",
		"v1.1.10.5%2E":                "system id",
		"v1.1.10.5,v1.1.10.5":         "want v1.<timeline>",
		"v1.1.10":                     "want v1.<timeline>",
		"v1":                          "want v1.<timeline>",
		"v1.":                         "want v1.<timeline>",
		"garbage":                     "unknown version",
		"v1.1.3000148.6f1e2d3c4b5a69": "",
	} {
		_, err := hasql.ParseToken(s)
		if why == "" {
			assert.NoError(t, err, "%q", s)
			continue
		}
		if assert.Error(t, err, "%q", s) {
			assert.Contains(t, err.Error(), why, "%q", s)
			assert.Contains(t, err.Error(), "hasql: token", "%q", s)
		}
	}
}

// FuzzParseToken: any text gives a token or an error, never a panic, and a
// token read back prints as the text it was read from.
func FuzzParseToken(f *testing.F) {
	f.Add("v1.2.3000148.6f1e2d3c4b5a6978")
	f.Add("v1.1.0.0")
	f.Add("v1.ffffffff.ffffffffffffffff.ffffffffffffffff")
	f.Add("v1..")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := hasql.ParseToken(s)
		if err != nil {
			if !tok.IsZero() {
				t.Fatalf("%q: error %v with a token %+v", s, err, tok)
			}
			return
		}
		if tok.String() != s {
			t.Fatalf("%q read as %+v, which prints as %q", s, tok, tok.String())
		}
		if tok.Timeline == 0 || len(s) > 45 {
			t.Fatalf("%q accepted: %+v", s, tok)
		}
	})
}

func TestTokenMerge(t *testing.T) {
	a := hasql.Token{LSN: 100, Timeline: 1, SystemID: 7}
	b := hasql.Token{LSN: 200, Timeline: 1, SystemID: 7}
	c := hasql.Token{LSN: 50, Timeline: 2, SystemID: 7}
	other := hasql.Token{LSN: 10, Timeline: 1, SystemID: 8}
	for _, tc := range []struct {
		name       string
		x, y, want hasql.Token
	}{
		{"later position", a, b, b},
		{"later position, either order", b, a, b},
		{"newer timeline beats a higher position", b, c, c},
		{"newer timeline, either order", c, b, c},
		{"zero gives the other", hasql.Token{}, a, a},
		{"the other way", a, hasql.Token{}, a},
		{"another cluster: the newer argument", a, other, other},
		{"same token", a, a, a},
	} {
		t.Run(tc.name, func(t *testing.T) { assert.Equal(t, tc.want, tc.x.Merge(tc.y)) })
	}
}

func TestParseHistory(t *testing.T) {
	ends, err := hasql.ParseHistory("1\t0/3000148\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n# comment\n")
	require.NoError(t, err)
	assert.Equal(t, map[uint32]hasql.LSN{1: 0x3000148, 2: 0x5000000}, ends)
	for _, bad := range []string{"1", "x\t0/1\tr", "1\tzz\tr", "99999999999\t0/1\tr"} {
		_, err := hasql.ParseHistory(bad)
		assert.Error(t, err, "%q", bad)
	}
}

func TestForkPosition(t *testing.T) {
	// An insert position just past a page header stands for the page
	// boundary; anything else for itself.
	assert.Equal(t, hasql.LSN(0x3000000), hasql.ForkPosition(0x3000028)) // segment start, long header
	assert.Equal(t, hasql.LSN(0x3002000), hasql.ForkPosition(0x3002018)) // page start, short header
	assert.Equal(t, hasql.LSN(0x3002030), hasql.ForkPosition(0x3002030))
	assert.Equal(t, hasql.LSN(0x3000148), hasql.ForkPosition(0x3000148))
}

func TestTokenWaitSetting(t *testing.T) {
	cfg, err := hasql.ParseConfig("postgres://u@h1,h2/db?hasql_token_wait=250ms")
	require.NoError(t, err)
	assert.Equal(t, 250*time.Millisecond, cfg.TokenWait)
	assert.NotContains(t, cfg.PoolConfig.ConnConfig.RuntimeParams, "hasql_token_wait", "never sent to the server")
	cfg, err = hasql.ParseConfig("postgres://u@h1/db")
	require.NoError(t, err)
	assert.Equal(t, hasql.DefaultTokenWait, cfg.TokenWait)
	_, err = hasql.ParseConfig("postgres://u:secret@h1/db?hasql_token_wait=soon")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `hasql_token_wait "soon"`)
	assert.NotContains(t, err.Error(), "secret")
}
