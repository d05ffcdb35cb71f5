package imap_test

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"smimeproxy/internal/serveproc"
	"smimeproxy/keystore"
	"smimeproxy/smime"
)

// The memory budget, seen from outside: the real `smimeproxy serve`, in
// front of the lab's Dovecot, opens a 68 MB encrypted message for a FETCH,
// once and in six sessions at once (with the cache off, so that each opens
// it), and its peak resident memory (VmHWM) stays under the budget plus a
// constant: the headroom the process adds to the budget for its Go memory
// limit, and the program with what the runtime overshoots that soft limit
// by. Sessions that would go over the budget wait their turn.
const (
	fetchBudgetMB   = 384 // holds one 68 MB message being opened (4 times its size)
	fetchHeadroomMB = 96  // cmd/smimeproxy's memory headroom
	fetchProgramMB  = 64  // the program, and the runtime's overshoot
	fetchPassphrase = "memory test passphrase"
)

func TestLabMemory(t *testing.T) {
	e, p := newSMIMEEnv(t)
	dir := t.TempDir()
	store, err := keystore.Create(filepath.Join(dir, "keystore"), []byte(fetchPassphrase),
		&keystore.Options{KDF: &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, RecheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	p12, err := pkcs12.Modern.Encode(p.alice.Key, p.alice.Cert, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.ImportPKCS12(p12, "pw"); err != nil {
		t.Fatal(err)
	}

	// About 51 MB of text, 68 MB once encrypted and in base64.
	var body bytes.Buffer
	for i := 0; body.Len() < 51<<20; i++ {
		fmt.Fprintf(&body, "line %d of a very large message that a stranger sent to alice\r\n", i)
	}
	msg, err := smime.Encrypt([]byte(plainMsg("huge", body.String())), []*x509.Certificate{p.alice.Cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	body.Reset()
	t.Logf("the message is %d MiB", len(msg)>>20)
	box := e.mailbox(t, "alice", string(msg))

	cfg := filepath.Join(dir, "config.yaml")
	err = os.WriteFile(cfg, fmt.Appendf(nil, `smtp:
  listen: [{addr: "127.0.0.1:0", tls: none}]
  upstream: {addr: %q, tls: starttls, ca_file: %q}
imap:
  listen: [{addr: "127.0.0.1:0", tls: none}]
  upstream: {addr: %q, tls: starttls, ca_file: %q}
  cache_mb: 0
  max_message_mb: 100
keystore: {dir: keystore}
trust: {system_roots: false}
metrics: {listen: ""}
log: {format: json}
memory_budget_mb: %d
`, e.lab.Submission, e.lab.CA, e.lab.IMAP, e.lab.CA, fetchBudgetMB), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	proc := serveproc.Start(t, serveproc.Binary(t), cfg, "SMIMEPROXY_PASSPHRASE="+fetchPassphrase)
	bound := int64(fetchBudgetMB+fetchHeadroomMB+fetchProgramMB) << 20
	alice := e.lab.User(t, "alice")
	for _, n := range []int{1, 6} {
		t.Run(fmt.Sprintf("%d at once", n), func(t *testing.T) {
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					c := dial(t, proc.IMAP[0], nil)
					// Six large messages are opened in turn, within the budget.
					c.timeout = 3 * time.Minute
					c.login(alice)
					c.cmd("a EXAMINE "+box, "")
					got := c.cmd("b FETCH 1 (BODY.PEEK[])", "")
					all := joined(got)
					if !strings.Contains(all, "of a very large message") || !strings.Contains(all, "b OK") {
						t.Errorf("the large message was not served decrypted: %.300q", all)
					}
					c.cmd("z LOGOUT", "")
				})
			}
			wg.Wait()
			peak := proc.PeakRSS(t)
			t.Logf("peak resident %d MiB; bound %d MiB", peak>>20, bound>>20)
			if peak > bound {
				t.Errorf("peak resident memory %d MiB, over the budget plus %d MiB", peak>>20, fetchHeadroomMB+fetchProgramMB)
			}
		})
	}
}
