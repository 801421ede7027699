package discovery

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Defaults of the built-in Discoverers' configs.
const (
	DefaultDNSInterval     = 10 * time.Second // DNSConfig.Interval, SRVConfig.Interval
	DefaultPatroniInterval = 5 * time.Second  // PatroniConfig.Interval
	DefaultMinInterval     = time.Second      // MinInterval of every config
	DefaultDNSTimeout      = 5 * time.Second  // DNSConfig.Timeout, SRVConfig.Timeout
	DefaultPatroniTimeout  = 2 * time.Second  // PatroniConfig.Timeout
	// DefaultPatroniLookTimeout bounds a whole Patroni look, every API it
	// asks included (PatroniConfig.LookTimeout).
	DefaultPatroniLookTimeout = 10 * time.Second
	// DefaultMaxNodes is the most nodes one answer may hold (MaxNodes of
	// every config): an answer with more is an error, and the last good
	// set stays.
	DefaultMaxNodes = 64
)

// poller is the look loop of DNS, SRV and Patroni: a look at once, then one
// every interval (with jitter), sooner on Refresh, sooner with backoff while
// looks fail.
type poller struct {
	// Read-only after construction.
	interval    time.Duration
	minInterval time.Duration
	timeout     time.Duration // bound of one look; 0: the look bounds itself
	maxNodes    int           // the most nodes a look may find
	kind        string        // "dns", "srv" or "patroni", for errors
	look        func(ctx context.Context) ([]Node, error)

	refresh chan struct{} // 1-buffered: a burst of Refresh calls collapses into one
	running atomic.Bool   // set while Run runs
}

func newPoller(kind string, interval, minInterval, timeout time.Duration, maxNodes int, look func(context.Context) ([]Node, error)) *poller {
	return &poller{
		interval:    interval,
		minInterval: minInterval,
		timeout:     timeout,
		maxNodes:    maxNodes,
		kind:        kind,
		look:        look,
		refresh:     make(chan struct{}, 1),
	}
}

// Refresh asks for a look; it never blocks.
func (p *poller) Refresh() {
	select {
	case p.refresh <- struct{}{}:
	default:
	}
}

var errRunning = errors.New("discovery: Run called while another Run of the same Discoverer runs")

// run is Discoverer.Run. It starts no goroutine.
func (p *poller) run(ctx context.Context, update func(State)) error {
	if !p.running.CompareAndSwap(false, true) {
		return errRunning
	}
	defer p.running.Store(false)

	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = p.minInterval
	bo.MaxInterval = p.interval
	bo.MaxElapsedTime = 0 // looks go on while ctx lasts

	var (
		good     []Node // the last set found, reported to update
		last     State  // the last State reported
		reported bool
	)
	for {
		// A request made before this look is answered by it.
		select {
		case <-p.refresh:
		default:
		}
		nodes, err := p.lookOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		lookedAt := time.Now()
		wait := jitter(p.interval)
		st := State{Nodes: good, Err: err}
		if err == nil {
			bo.Reset()
			if !Equal(nodes, good) {
				good = nodes
			}
			st.Nodes = good
		} else {
			wait = min(bo.NextBackOff(), p.interval)
		}
		if !reported || !sameState(last, st) {
			last, reported = st, true
			update(State{Nodes: clone(st.Nodes), Err: st.Err})
		}

		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		case <-p.refresh:
			timer.Stop()
			if d := time.Until(lookedAt.Add(p.minInterval)); d > 0 {
				gap := time.NewTimer(d)
				select {
				case <-ctx.Done():
					gap.Stop()
					return nil
				case <-gap.C:
				}
			}
		}
	}
}

// lookOnce runs one look, bounded by the timeout when there is one; a set
// over maxNodes is an error.
func (p *poller) lookOnce(ctx context.Context) ([]Node, error) {
	if p.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}
	nodes, err := p.look(ctx)
	if err == nil && len(nodes) > p.maxNodes {
		return nil, tooMany(p.kind, len(nodes), p.maxNodes)
	}
	return nodes, err
}

// ErrTooManyNodes is wrapped by the error of a look whose answer holds
// more nodes than the Discoverer's MaxNodes.
var ErrTooManyNodes = errors.New("too many nodes")

func tooMany(kind string, n, max int) error {
	return fmt.Errorf("discovery: %s: the answer holds %d nodes, over the limit of %d (MaxNodes, %s): %w", kind, n, max, SettingMaxNodes, ErrTooManyNodes)
}

// maxNodesOr validates and defaults a config's MaxNodes.
func maxNodesOr(kind string, n int) (int, error) {
	if n < 0 {
		return 0, fmt.Errorf("discovery: %s: MaxNodes %d: must not be negative", kind, n)
	}
	if n == 0 {
		return DefaultMaxNodes, nil
	}
	return n, nil
}

// sameState reports whether two States would read the same to the Manager:
// the same nodes and the same error text.
func sameState(a, b State) bool {
	if (a.Err == nil) != (b.Err == nil) || a.Err != nil && a.Err.Error() != b.Err.Error() {
		return false
	}
	return Equal(a.Nodes, b.Nodes)
}

// jitter returns d give or take 10%, so that many clients started together
// do not all look at the same moments; never more than the longest
// Duration (an Interval near it would wrap to a negative wait).
func jitter(d time.Duration) time.Duration {
	j := time.Duration((rand.Float64()*0.2 - 0.1) * float64(d))
	if j > 0 && d > math.MaxInt64-j {
		return math.MaxInt64
	}
	return d + j
}

// durationOr returns d, or def when d is 0.
func durationOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
