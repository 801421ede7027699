package hasql_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxha/pgxha/discovery"
	"github.com/pgxha/pgxha/hasql"
)

// scramRogue is a server that asks every connection for SCRAM-SHA-256 and
// answers its first message with an iteration count of iterations (pgx
// accepts up to 10,000,000), then waits for the client's proof, counting
// the exchanges begun and the proofs received, and ends the connection.
func scramRogue(t *testing.T, iterations int) (addr string, begun, proved *atomic.Int64) {
	t.Helper()
	begun, proved = new(atomic.Int64), new(atomic.Int64)
	ln := fakePGFor(t, 2*time.Minute, func(_ net.Conn, be *pgproto3.Backend, _ *pgproto3.StartupMessage) {
		be.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}})
		if be.Flush() != nil || be.SetAuthType(pgproto3.AuthTypeSASL) != nil {
			return
		}
		msg, err := be.Receive()
		if err != nil {
			return
		}
		first, ok := msg.(*pgproto3.SASLInitialResponse)
		if !ok {
			return
		}
		i := strings.Index(string(first.Data), "r=")
		if i < 0 {
			return
		}
		nonce := string(first.Data[i+2:])
		begun.Add(1)
		be.Send(&pgproto3.AuthenticationSASLContinue{Data: []byte(fmt.Sprintf("r=%sROGUE,s=%s,i=%d",
			nonce, base64.StdEncoding.EncodeToString([]byte("salt-of-the-rogue")), iterations))})
		if be.Flush() != nil || be.SetAuthType(pgproto3.AuthTypeSASLContinue) != nil {
			return
		}
		if _, err := be.Receive(); err == nil {
			proved.Add(1)
		}
	})
	return ln.Addr().String(), begun, proved
}

// TestSCRAMIterationCountIsBounded: a server in the discovered set,
// vouched for by nothing, asks for SCRAM-SHA-256 (which
// require_auth=scram-sha-256 allows, and channel_binding=require too over
// TLS that verify-full does not check) with 10,000,000 iterations, the most
// pgx accepts. The client's PBKDF2 (pbkdf2.Key, which no context
// interrupts) would cost seconds of a core per connect (5 s on one
// machine, 39 s with -race) against PostgreSQL's 4096 by default, for each
// check connect and each of the pool's connects, past CheckTimeout, and
// Close would wait for it. A server in the set must not hold the Manager's
// goroutines and Close much past the check timeout (here 300 ms).
func TestSCRAMIterationCountIsBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	addr, begun, proved := scramRogue(t, 10_000_000)
	cfg, err := hasql.ParseConfig(fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/app?sslmode=disable&hasql_check_timeout=300ms", closedPort(t)))
	require.NoError(t, err)
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Discoverer = newSetDiscoverer(discovery.Node{Addr: addr})
	m, err := hasql.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	waitUntil(t, ctx, "a connect began the rogue's SCRAM exchange", func() bool { return begun.Load() >= 1 })
	start := time.Now()
	m.Close()
	took := time.Since(start)
	t.Logf("Close took %s; SCRAM exchanges begun %d, proofs received %d", took, begun.Load(), proved.Load())
	assert.Less(t, took, time.Second, "Close waited %s for connects computing a rogue's SCRAM iteration count", took)
}
