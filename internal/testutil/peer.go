package testutil

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// peerTimeout covers a first start that installs the Debian packages.
const peerTimeout = 5 * time.Minute

// Peer is a real server that a deploy/ directory brings up for the tests
// (the lab, PostgreSQL, slapd), shared by every test of a binary. The
// first test that asks starts it: as root with deploy/<Dir>/start, which
// installs its packages if need be and uses one that already runs;
// otherwise it looks for a running one with deploy/<Dir>/env, and a test
// skips when there is none (failing in CI). Tests also skip unless
// integration tests are enabled.
type Peer[T any] struct {
	Dir   string                     // under deploy/
	Name  string                     // for people: "the lab", "slapd"
	Parse func(io.Reader) (T, error) // reads the KEY=VALUE lines the script printed

	once    sync.Once
	val     T
	err     error
	notRoot bool
}

// Start returns the running peer, starting it the first time.
func (p *Peer[T]) Start(t testing.TB) T {
	t.Helper()
	Integration(t)
	root := ModuleRoot(t)
	p.once.Do(func() {
		p.notRoot = os.Geteuid() != 0
		script := "start"
		if p.notRoot {
			script = "env"
		}
		p.val, p.err = p.run(root, script)
	})
	switch {
	case p.err != nil && p.notRoot:
		Absent(t, fmt.Sprintf("%v; starting %s needs root (sudo deploy/%s/start)", p.err, p.Name, p.Dir))
	case p.err != nil:
		t.Fatal(p.err)
	}
	return p.val
}

func (p *Peer[T]) run(root, script string) (T, error) {
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(root, "deploy", p.Dir, script))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A server that kept the script's stdout would otherwise hold Run forever.
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		var zero T
		return zero, fmt.Errorf("deploy/%s/%s: %w: %s", p.Dir, script, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return p.Parse(&stdout)
}
