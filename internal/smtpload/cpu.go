package smtpload

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which Linux fixes at 100 for every architecture it exposes to programs.
const clockTick = 10 * time.Millisecond

// ProcessCPU is the CPU time, user and system, that process pid has used
// so far, from /proc/PID/stat (Linux), to 10 ms.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("smtpload: CPU time of process %d: %w", pid, err)
	}
	return parseStat(b)
}

// parseStat reads utime and stime, fields 14 and 15 of a stat line. The
// command name, field 2, is in parentheses and may hold spaces and
// parentheses itself: the fields are counted from the last ')'.
func parseStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("smtpload: unreadable /proc stat line %q", b)
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, fmt.Errorf("smtpload: short /proc stat line %q", b)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(string(s), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("smtpload: unreadable CPU time %q in /proc stat line", s)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}
