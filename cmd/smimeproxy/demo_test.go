package main

import (
	"strings"
	"testing"
)

// TestDemoSelfTest runs what the README's quick start promises.
func TestDemoSelfTest(t *testing.T) {
	c := newCLI(t)
	code, out, errOut := c.run("demo", "--self-test")
	if code != exitOK || !strings.Contains(out, "Self-test passed") {
		t.Fatalf("demo --self-test: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{"ok   it is encrypted on the server", "ok   it is decrypted", "ok   alice's signature is verified"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo --self-test output lacks %q:\n%s", want, out)
		}
	}
}
