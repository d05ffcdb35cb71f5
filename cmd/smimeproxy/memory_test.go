package main

import (
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"testing"

	"smimeproxy/config"
)

// TestMemoryLimit: serve sets the soft memory limit from the budget and the
// collector's GOGC, and leaves each to the environment when it sets it.
func TestMemoryLimit(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	c := config.Default()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	setMemoryLimit(c, log)
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Errorf("GOGC %d, want %d", got, gcPercent)
	}
	want := budgetBytes(c) + int64(c.IMAP.CacheMB)<<20 + memoryHeadroom
	if got := debug.SetMemoryLimit(math.MaxInt64); got != want {
		t.Errorf("memory limit %d, want %d", got, want)
	}

	t.Setenv("GOGC", "50")
	t.Setenv("GOMEMLIMIT", "1GiB")
	setMemoryLimit(c, log)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC %d with GOGC set in the environment, want it left alone (100)", got)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("memory limit %d with GOMEMLIMIT set in the environment, want it left alone", got)
	}
}
