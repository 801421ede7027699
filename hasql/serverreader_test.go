package hasql

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"
)

// chunkedReader hands out src in chunks of random sizes (1 byte to 3x a
// message), so that headers and bodies split at every place.
type chunkedReader struct {
	src []byte
	rng *rand.Rand
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if len(c.src) == 0 {
		return 0, io.EOF
	}
	n := 1 + c.rng.IntN(min(len(p), 9000))
	n = min(n, len(c.src), len(p))
	copy(p, c.src[:n])
	c.src = c.src[n:]
	return n, nil
}

// TestServerReaderFramesAnHonestStream: a legit stream (authentication with a
// SCRAM exchange, parameters, key, ready; then a long life: parameter
// changes of the same names hundreds of times, large DataRows, CopyOut
// and CopyBoth data, notices, notifications) read through a serverReader
// split at random places decodes as sent, with no bound tripped.
func TestServerReaderFramesAnHonestStream(t *testing.T) {
	var msgs []pgproto3.BackendMessage
	msgs = append(msgs,
		&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}},
		&pgproto3.AuthenticationSASLContinue{Data: []byte("r=abc,s=c2FsdA==,i=4096")},
		&pgproto3.AuthenticationSASLFinal{Data: []byte("v=xyz")},
		&pgproto3.AuthenticationOk{},
	)
	for _, p := range []string{"application_name", "client_encoding", "DateStyle", "default_transaction_read_only", "in_hot_standby", "integer_datetimes", "IntervalStyle", "is_superuser", "server_encoding", "server_version", "session_authorization", "standard_conforming_strings", "TimeZone", "search_path", "scram_iterations"} {
		msgs = append(msgs, &pgproto3.ParameterStatus{Name: p, Value: "v"})
	}
	msgs = append(msgs, &pgproto3.NoticeResponse{Severity: "WARNING", Message: strings.Repeat("w", 100<<10)})
	msgs = append(msgs, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 4000 {
		if i%500 == 1 {
			// A large row, above every pre-ready bound.
			msgs = append(msgs, &pgproto3.DataRow{Values: [][]byte{bytes.Repeat([]byte("d"), 3<<20+rng.IntN(1000))}})
		}
		switch rng.IntN(8) {
		case 0:
			msgs = append(msgs, &pgproto3.ParameterStatus{Name: []string{"application_name", "TimeZone", "DateStyle", "search_path", "in_hot_standby"}[i%5], Value: strings.Repeat("x", rng.IntN(200))})
		case 1:
			msgs = append(msgs, &pgproto3.DataRow{Values: [][]byte{bytes.Repeat([]byte("d"), rng.IntN(2000))}})
		case 2:
			msgs = append(msgs, &pgproto3.CopyData{Data: bytes.Repeat([]byte("S"), rng.IntN(70000))}) // 'd' carrying 'S' bytes
		case 3:
			msgs = append(msgs, &pgproto3.NotificationResponse{PID: 1, Channel: strings.Repeat("c", 63), Payload: strings.Repeat("p", 7999)})
		case 4:
			msgs = append(msgs, &pgproto3.NoticeResponse{Severity: "NOTICE", Message: strings.Repeat("n", rng.IntN(100000))})
		case 5:
			msgs = append(msgs, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
		case 6:
			msgs = append(msgs, &pgproto3.ReadyForQuery{TxStatus: 'I'})
		default:
			msgs = append(msgs, &pgproto3.DataRow{Values: [][]byte{[]byte("S"), nil, []byte("Z")}})
		}
	}
	var wire []byte
	for _, m := range msgs {
		var err error
		wire, err = m.Encode(wire)
		require.NoError(t, err)
	}
	for seed := range uint64(2) {
		sr := &serverReader{r: &chunkedReader{src: wire, rng: rand.New(rand.NewPCG(seed, 7))}}
		f := pgproto3.NewFrontend(sr, io.Discard)
		f.SetMaxBodyLen(maxPreAuthMessage)
		for i, want := range msgs {
			got, err := f.Receive()
			require.NoError(t, err, "seed %d message %d (%T)", seed, i, want)
			require.Equal(t, fmt.Sprintf("%T", want), fmt.Sprintf("%T", got), "seed %d message %d", seed, i)
			if _, ok := got.(*pgproto3.ReadyForQuery); ok {
				f.SetMaxBodyLen(pgxMaxMessage)
			}
		}
		require.Len(t, sr.params, 15, "seed %d", seed)
	}
}

// TestErrorWakeAfterTheClockStepsBack: errorWake keeps its window in
// wall-clock nanoseconds (time.Now().UnixNano() drops the monotonic
// reading). After the wall clock steps back (NTP step, VM resume, a
// manual date), an error the application meets must still have its node
// checked within a window (min(CheckInterval, 1s)), not after the size of
// the step. Simulated here by a last wake stored an hour "ahead" of now,
// which is what a clock stepped back an hour leaves.
func TestErrorWakeAfterTheClockStepsBack(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := &Manager{cfg: &Config{CheckInterval: 500 * time.Millisecond}, ctx: ctx}
	n := &node{m: m}
	// The last error wake, at 12:00 by the clock of then; the clock is
	// now 11:00.
	n.errorWoke.Store(time.Now().Add(time.Hour).UnixNano())

	n.errorWake() // the node's connections are lost now
	deadline := time.Now().Add(3 * time.Second)
	for !n.pending.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	require.True(t, n.pending.Load(),
		"an error met after the wall clock stepped back an hour asked for no check within 3s: errorWake's window is wall-clock time, its deferred wake waits out the step")
}
