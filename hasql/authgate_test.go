package hasql_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
)

func TestAuthGate(t *testing.T) {
	wrongPassword := &pgconn.PgError{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "app"`}
	noDatabase := &pgconn.PgError{Severity: "FATAL", Code: "3D000", Message: `database "nope" does not exist`}
	now := time.Unix(1_000_000, 0)

	t.Run("other failures leave it open", func(t *testing.T) {
		var g hasql.AuthGate
		changed, code, _ := g.Failed(errors.New("connection refused"), now)
		assert.False(t, changed)
		assert.Empty(t, code)
		assert.NoError(t, g.Allow(now))
		assert.NoError(t, g.Allow(now))
	})

	t.Run("one login per interval, bounded, cleared by a success", func(t *testing.T) {
		var g hasql.AuthGate
		changed, code, next := g.Failed(wrongPassword, now)
		assert.True(t, changed, "the first failure is news")
		assert.Equal(t, "28P01", code)
		assert.True(t, next.After(now))

		// Until next, every connect fails at once, without a login.
		err := g.Allow(now)
		var ae *hasql.AuthError
		require.ErrorAs(t, err, &ae)
		assert.Equal(t, "28P01", ae.Code)
		assert.Equal(t, "n1:5432", ae.Addr)
		assert.Equal(t, next, ae.RetryAt)
		var pgErr *pgconn.PgError
		assert.ErrorAs(t, err, &pgErr, "unwraps to the server's error")

		// At next, one connect goes; the others wait for its outcome.
		logins := 0
		for range 10 {
			if g.Allow(next) == nil {
				logins++
			}
		}
		assert.Equal(t, 1, logins)

		// The intervals grow and stay within 5s (plus jitter), logging no
		// news while the failure is the same.
		t0, prev := next, time.Duration(0)
		grew := false
		for range 12 {
			changed, _, n := g.Failed(wrongPassword, t0)
			assert.False(t, changed)
			d := n.Sub(t0)
			assert.LessOrEqual(t, d, 5*time.Second*13/10)
			grew = grew || d > prev
			prev, t0 = d, n
		}
		assert.True(t, grew)
		assert.GreaterOrEqual(t, prev, 5*time.Second*7/10, "reaches the cap")

		changed, code, _ = g.Failed(noDatabase, t0)
		assert.True(t, changed, "another SQLSTATE is news")
		assert.Equal(t, "3D000", code)

		assert.True(t, g.Succeeded())
		assert.NoError(t, g.Allow(t0), "open at once after a success")
		assert.False(t, g.Succeeded())

		// A new failure starts from the initial interval again.
		_, _, n := g.Failed(wrongPassword, t0)
		assert.Less(t, n.Sub(t0), time.Second)
	})
}
