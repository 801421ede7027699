package hasql

import (
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"

	"github.com/pgxha/pgxha/checker"
)

func TestParsePromotion(t *testing.T) {
	row := func(fields ...string) []*pgconn.Result {
		r := make([][]byte, len(fields))
		for i, f := range fields {
			r[i] = []byte(f)
		}
		return []*pgconn.Result{{Rows: [][][]byte{r}}}
	}
	for _, tc := range []struct {
		name    string
		results []*pgconn.Result
		want    promotion
		ok      bool
	}{
		{"promoted, writable", row("f", "2", "23068672"), promotion{readOnly: false, timeline: 2, lsn: checker.LSN(23068672)}, true},
		{"promoted, read-only", row("t", "3", "1"), promotion{readOnly: true, timeline: 3, lsn: 1}, true},
		{"no row: still in recovery", []*pgconn.Result{{}}, promotion{}, false},
		{"no result", nil, promotion{}, false},
		{"bad timeline", row("f", "x", "1"), promotion{}, false},
		{"timeline zero", row("f", "0", "1"), promotion{}, false},
		{"negative position", row("f", "2", "-1"), promotion{}, false},
		{"short row", row("f", "2"), promotion{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parsePromotion(tc.results)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
}
