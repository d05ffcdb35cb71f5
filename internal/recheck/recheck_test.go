package recheck_test

import (
	"testing"
	"time"

	"smimeproxy/internal/recheck"
)

func TestThrottle(t *testing.T) {
	th := recheck.NewThrottle(time.Hour)
	if !th.Due() {
		t.Error("the first check is not due")
	}
	if th.Due() {
		t.Error("a second check within the interval is due")
	}
	if off := recheck.NewThrottle(-1); off.Due() {
		t.Error("a negative interval let a check through")
	}
	always := recheck.NewThrottle(0)
	for i := range 2 {
		if !always.Due() {
			t.Errorf("a zero interval held check %d back", i+1)
		}
	}
}

func TestUnsettled(t *testing.T) {
	now := time.Now()
	if !recheck.Unsettled(now, now.Add(time.Second)) {
		t.Error("a modification a second before the scan counts as settled")
	}
	if recheck.Unsettled(now.Add(-time.Minute), now) {
		t.Error("a modification a minute before the scan counts as unsettled")
	}
}
