package topology

import (
	"time"

	"github.com/pgxha/pgxha/checker"
)

// lsnHistory remembers the master's WAL position at its recent checks, to
// tell how old the newest data a replica has not replayed is.
type lsnHistory struct {
	owner    ID // the node the samples are of
	timeline uint32
	samples  [512]lsnSample // ring
	head     int            // next write
	count    int
}

type lsnSample struct {
	at  time.Time
	lsn checker.LSN
}

func (h *lsnHistory) add(owner ID, timeline uint32, at time.Time, lsn checker.LSN) {
	if h.owner != owner || h.timeline != timeline || h.count == 0 {
		*h = lsnHistory{owner: owner, timeline: timeline}
	}
	if h.count > 0 && h.at(h.count-1).lsn > lsn {
		h.count = 0 // went backwards: a new history
		h.head = 0
	}
	h.samples[h.head] = lsnSample{at: at, lsn: lsn}
	h.head = (h.head + 1) % len(h.samples)
	h.count = min(h.count+1, len(h.samples))
}

// at returns the i-th oldest sample.
func (h *lsnHistory) at(i int) lsnSample {
	start := (h.head - h.count + len(h.samples)) % len(h.samples)
	return h.samples[(start+i)%len(h.samples)]
}

// lagFor is how long ago the master had WAL beyond replay: the time since
// the oldest sample past replay. When only the newest sample is past it,
// the replica lacked, when its position was read (at readAt), WAL the
// master had at that sample: the time from the sample to readAt, 0 when
// the sample came later (the master's replay_lag is the finer measure
// then; a replica whose replay stands still is not in step for it).
// covered is false when every sample is past replay (or there is none):
// the history began after the replica's position, and the time returned is
// only a lower bound.
func (h *lsnHistory) lagFor(replay checker.LSN, now, readAt time.Time) (lag time.Duration, covered bool) {
	if h.count == 0 {
		return 0, false
	}
	lo, hi := 0, h.count
	for lo < hi {
		mid := (lo + hi) / 2
		if h.at(mid).lsn > replay {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	switch {
	case lo == 0:
		return max(now.Sub(h.at(0).at), 0), false
	case lo == h.count:
		return 0, true
	case lo == h.count-1:
		if readAt.After(now) {
			readAt = now
		}
		return max(readAt.Sub(h.at(lo).at), 0), true
	}
	return max(now.Sub(h.at(lo).at), 0), true
}
