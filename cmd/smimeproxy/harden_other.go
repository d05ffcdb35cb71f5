//go:build !linux

package main

// noCoreDumps does nothing where there is no prctl: limit core dumps with
// the system's own means (ulimit -c 0).
func noCoreDumps() error { return nil }
