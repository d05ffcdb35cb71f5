package smtpload

import (
	"crypto/sha256"
	"os"
	"runtime"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name, line string
		want       time.Duration
		ok         bool
	}{
		{"plain", "4242 (smimeproxy) S 1 4242 4242 0 -1 4194560 1200 0 0 0 150 37 0 0 20 0 9 0 100 0 0", 1870 * time.Millisecond, true},
		{"name with ) and spaces", "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 0 0", 70 * time.Millisecond, true},
		{"no name", "7 R 1 7", 0, false},
		{"short", "7 (x) R 1 7 7 0 -1 0 0 0 0 0 3", 0, false},
		{"not a number", "7 (x) R 1 7 7 0 -1 0 0 0 0 0 x 4 0", 0, false},
	}
	for _, tc := range tests {
		got, err := parseStat([]byte(tc.line))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseStat(%s) = %v, %v; want %v, ok %v", tc.name, got, err, tc.want, tc.ok)
		}
	}
}

// TestProcessCPU: work this process does shows in its CPU time, which
// never goes back.
func TestProcessCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/PID/stat is Linux's")
	}
	before, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(nil)
	for deadline := time.Now().Add(time.Minute); ; {
		for range 10000 {
			sum = sha256.Sum256(sum[:])
		}
		now, err := ProcessCPU(os.Getpid())
		switch {
		case err != nil:
			t.Fatal(err)
		case now < before:
			t.Fatalf("CPU time went back from %v to %v", before, now)
		case now-before >= 50*time.Millisecond:
			if _, err := ProcessCPU(-1); err == nil {
				t.Error("ProcessCPU(-1) succeeded")
			}
			return
		case time.Now().After(deadline):
			t.Fatalf("CPU time grew by %v in a minute of hashing", now-before)
		}
	}
}
