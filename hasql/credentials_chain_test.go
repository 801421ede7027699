//go:build linux

package hasql_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/hasql"
	"github.com/pgxha/pgxha/testcluster"
)

var errVaultSealed = errors.New("vault sealed")

type providerError struct{ body string }

func (e *providerError) Error() string { return "provider: " + e.body }

// A PasswordFunc's error reaches the caller of an acquire with its chain:
// errors.Is / errors.As find the provider's sentinel and type whatever the
// length of its text (a secrets manager's error may quote a whole answer).
func TestPasswordFuncErrorChainKept(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := testcluster.New(t, testcluster.Options{Replicas: -1})
	u, err := url.Parse(c.DSN())
	require.NoError(t, err)
	pw, _ := u.User.Password()
	for _, size := range []int{100, 9000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			var fail atomic.Bool
			provider := func(ctx context.Context, n hasql.NodeConfig) (string, error) {
				if fail.Load() {
					return "", fmt.Errorf("%w: %w", errVaultSealed, &providerError{body: strings.Repeat("x", size)})
				}
				return pw, nil
			}
			m := newManager(t, ctx, c.DSN(), hasql.WithPasswordFunc(provider))
			wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
			require.NoError(t, m.WaitReady(wctx, 1, 0))
			wcancel()
			fail.Store(true)
			var err error
			for i := 0; i < 50 && err == nil; i++ {
				actx, acancel := context.WithTimeout(ctx, 3*time.Second)
				conn, aerr := m.AcquireMaster(actx)
				acancel()
				err = aerr
				if conn != nil {
					defer conn.Release()
				}
			}
			require.Error(t, err)
			t.Logf("error (%d bytes): %.200s", len(err.Error()), err.Error())
			var pe *providerError
			assert.True(t, errors.Is(err, errVaultSealed), "errors.Is finds the provider's sentinel")
			assert.True(t, errors.As(err, &pe), "errors.As finds the provider's error type")
		})
	}
}
