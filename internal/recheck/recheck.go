// Package recheck paces the stores' checks for changes another process wrote
// to their directories (the CLI importing while the daemon runs): at most once
// per interval, by file modification times.
package recheck

import (
	"sync"
	"time"
)

// racyWindow covers file systems whose timestamps are coarse: a change made
// within this long of a scan may leave a modification time the scan saw.
const racyWindow = 2 * time.Second

// Throttle lets a check through at most once per interval. A negative
// interval never does: the store then changes only on an explicit reload.
type Throttle struct {
	every time.Duration
	mu    sync.Mutex
	last  time.Time
}

// NewThrottle returns a Throttle for the interval.
func NewThrottle(every time.Duration) *Throttle { return &Throttle{every: every} }

// Due reports whether a check is due now, starting the next interval if so.
func (t *Throttle) Due() bool {
	if t.every < 0 {
		return false
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.last) < t.every {
		return false
	}
	t.last = now
	return true
}

// Unsettled reports whether a modification time seen by a scan at loaded may
// still hide a later write in the same timestamp tick: until it is safely
// older than the scan, a store must look again.
func Unsettled(mod, loaded time.Time) bool { return loaded.Sub(mod) < racyWindow }
