package main

import (
	"log/slog"
	"os"
	"runtime/debug"

	"smimeproxy/config"
)

// memoryHeadroom is the memory the process needs besides the messages the
// budget counts and the IMAP cache: connections' buffers and TLS state, the
// stores' indexes, the runtime's own.
const memoryHeadroom = 96 << 20

// budgetBytes is the memory budget of c in bytes.
func budgetBytes(c *config.Config) int64 { return int64(c.MemoryBudgetMB) << 20 }

// setMemoryLimit sets the Go runtime's soft memory limit to the budget,
// the IMAP cache and the headroom. Below it the collector lets garbage pile
// up to as much as is live (GOGC=100), so that a process holding 300 MiB of
// messages could reach 600 MiB; near it, it collects sooner, and the
// process stays near the limit. A GOMEMLIMIT set in the environment wins.
func setMemoryLimit(c *config.Config, log *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit := budgetBytes(c) + int64(c.IMAP.CacheMB)<<20 + memoryHeadroom
	debug.SetMemoryLimit(limit)
	log.Debug("memory limit set", "bytes", limit)
}
