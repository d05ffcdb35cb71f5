// Package serveproc runs the real smimeproxy binary in a test, as an
// operator runs it (`smimeproxy serve`), for what only the whole process
// shows: above all its memory, the peak resident set (VmHWM) that the
// memory budget must bound.
package serveproc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"smimeproxy/internal/testutil"
)

// startTimeout bounds the wait for the process to say it started;
// stopTimeout, the wait for it to exit after SIGTERM.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
)

// Proc is a running `smimeproxy serve`.
type Proc struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	waitErr error         // how, once exited is closed
	stopped sync.Once
	stopErr error
	// Log is what the process wrote to stderr.
	Log *testutil.Buffer
	// SMTP and IMAP are the listeners' addresses, in configuration order,
	// as the process reported them (the ports it got for port 0).
	SMTP, IMAP []string
}

// Binary builds cmd/smimeproxy into the test's temporary directory and
// returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "smimeproxy")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/smimeproxy")
	cmd.Dir = testutil.ModuleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("serveproc: go build: %v\n%s", err, out)
	}
	return bin
}

// Start runs bin serve --config config with env added to the test's
// environment, waits until it has started, and stops it when the test
// ends. The configuration must log in JSON (log: {format: json}), at level
// info or below: the line saying it started names the listeners.
func Start(t testing.TB, bin, config string, env ...string) *Proc {
	t.Helper()
	p := &Proc{Log: &testutil.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "serve", "--config", config)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.Log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("serveproc: start %s: %v", bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { _ = p.stop() })

	deadline := time.Now().Add(startTimeout)
	for {
		if p.started() {
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("serveproc: the process ended before it started (%v):\n%s", p.waitErr, p.Log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serveproc: no start within %v:\n%s", startTimeout, p.Log.String())
		}
	}
}

// started reads the start line from the log, if it is there yet.
func (p *Proc) started() bool {
	sc := bufio.NewScanner(strings.NewReader(p.Log.String()))
	for sc.Scan() {
		var line struct {
			Msg  string   `json:"msg"`
			SMTP []string `json:"smtp"`
			IMAP []string `json:"imap"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "smimeproxy started" {
			p.SMTP, p.IMAP = line.SMTP, line.IMAP
			return true
		}
	}
	return false
}

// PID is the process's ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// PeakRSS is the most memory the process has held resident so far, in
// bytes (VmHWM).
func (p *Proc) PeakRSS(t testing.TB) int64 {
	t.Helper()
	return p.status(t, "VmHWM")
}

// RSS is the memory the process holds resident now, in bytes (VmRSS).
func (p *Proc) RSS(t testing.TB) int64 {
	t.Helper()
	return p.status(t, "VmRSS")
}

// status reads a "kB" field of /proc/PID/status.
func (p *Proc) status(t testing.TB, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("serveproc: %v", err)
	}
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, []byte(field+":"))
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(string(rest)), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("serveproc: %s in /proc/%d/status: %v", field, p.cmd.Process.Pid, err)
		}
		return kb << 10
	}
	t.Fatalf("serveproc: no %s in /proc/%d/status", field, p.cmd.Process.Pid)
	return 0
}

// Stop ends the process with SIGTERM, as systemd does, and fails the test
// unless it exits 0 in time.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	if err := p.stop(); err != nil {
		t.Errorf("serveproc: %v\n%s", err, p.Log.String())
	}
}

func (p *Proc) stop() error {
	p.stopped.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			if p.waitErr != nil {
				p.stopErr = fmt.Errorf("exit after SIGTERM: %w", p.waitErr)
			}
		case <-time.After(stopTimeout):
			_ = p.cmd.Process.Kill()
			<-p.exited
			p.stopErr = fmt.Errorf("no exit within %v of SIGTERM; killed", stopTimeout)
		}
	})
	return p.stopErr
}
