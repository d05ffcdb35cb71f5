package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// noCoreDumps keeps private keys, passphrases and decrypted mail out of
// core dumps, whatever GOTRACEBACK says: the process becomes non-dumpable
// (no core, no ptrace or /proc/PID/mem for other processes of the same
// user) and its core size limit, soft and hard, zero (for a kernel whose
// suid_dumpable still dumps non-dumpable processes). The systemd unit sets
// LimitCORE=0 as well, and then, since its system call filter refuses
// setrlimit, the limit is left as it is.
func noCoreDumps() error {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &rl); err != nil {
		return fmt.Errorf("read the core size limit: %w", err)
	}
	if rl.Cur != 0 || rl.Max != 0 {
		if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
			return fmt.Errorf("set the core size limit to 0 (LimitCORE=0 in a systemd unit does it too): %w", err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("make the process non-dumpable: %w", err)
	}
	return nil
}
