// Package testutil holds the helpers that every package's tests share: finding
// real peers (openssl, gpgsm, the mail-server lab) and the interop corpus, with
// one rule for all of them: skip locally when absent, fail under CI=true.
package testutil

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// CI reports whether the tests run in CI, where every real peer must be present.
func CI() bool { return os.Getenv("CI") == "true" }

// Absent skips the test with reason, or fails it in CI, where nothing may be absent.
func Absent(t testing.TB, reason string) {
	t.Helper()
	if CI() {
		t.Fatalf("%s (required in CI)", reason)
	}
	t.Skipf("%s; skipping", reason)
}

// NeedTool returns the path of the named program, skipping the test when it is
// not installed (failing it in CI).
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Absent(t, name+" is not installed")
	}
	return p
}

// Integration skips heavy suites (a real Postfix, a real client) unless
// SMIMEPROXY_INTEGRATION=1 or CI=true.
func Integration(t testing.TB) {
	t.Helper()
	if CI() || os.Getenv("SMIMEPROXY_INTEGRATION") == "1" {
		return
	}
	t.Skip("integration test; set SMIMEPROXY_INTEGRATION=1 to run it")
}

// ModuleRoot returns the directory that holds go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// InteropDir returns the shared interop corpus (../shared/interop from the
// module root, or $SMIMEPROXY_INTEROP). It skips the test when the corpus is
// absent, also in CI: the corpus sits beside the project, not in it.
func InteropDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("SMIMEPROXY_INTEROP")
	if dir == "" {
		dir = filepath.Join(ModuleRoot(t), "..", "shared", "interop")
	}
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST.md")); err != nil {
		t.Skipf("interop corpus not found at %s; skipping", dir)
	}
	return dir
}

// Logger returns a logger that writes into the test's output.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// Buffer collects what a server logs while the test reads it: a bytes.Buffer
// safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Serve runs a scripted server on a free loopback port until the test ends,
// handing each connection to handle on a goroutine of its own, and returns
// its address.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(conn)
		}
	}()
	return ln.Addr().String()
}

// UnusedAddr returns a loopback address that nothing listens on now.
func UnusedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
