package discovery_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/pgxha/pgxha/discovery"
)

// What a Patroni API says is bounded (and escaped) in the errors pgxha
// keeps and logs: a /cluster body whose "members" (or a member's "tags")
// is a huge string with escape codes went whole, unescaped, into the error.
func TestPatroniHugeBodyTokenInError(t *testing.T) {
	big := strings.Repeat("A", 2<<20) + `\u001b[2J`
	for name, body := range map[string]string{
		"members": `{"members": "` + big + `"}`,
		"tags":    `{"members": [{"name": "n1", "host": "127.0.0.1", "port": 5432, "role": "leader", "tags": "` + big + `"}]}`,
		"top":     `"` + big + `"`,
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, body)
			}))
			defer srv.Close()
			p := newPatroni(t, srv.URL)
			w := watch(t, p)
			st := w.waitFor("err", func(s discovery.State) bool { return s.Err != nil })
			assert.Less(t, len(st.Err.Error()), 4<<10,
				"the look's error holds %d bytes of the API's body", len(st.Err.Error()))
			assert.NotContains(t, st.Err.Error(), "\x1b")
		})
	}
}

// A password holding ",<letters>://" is still cut in two at that comma,
// and the first half is shown in the error (no '@' left to redact up to).
func TestURLPasswordWithCommaAndScheme(t *testing.T) {
	_, err := discovery.FromSettings(map[string]string{
		"hasql_discovery":      "patroni",
		"hasql_discovery_urls": "http://admin:Secr3tHalf,x://rest@10.0.0.1:8008",
	}, nil)
	assert.Error(t, err)
	if err != nil {
		assert.NotContains(t, err.Error(), "Secr3tHalf", "%v", err)
	}
}
