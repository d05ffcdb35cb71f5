package smtp

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"smimeproxy/internal/lab"
	"smimeproxy/internal/serveproc"
	"smimeproxy/internal/testpki"
)

// The memory budget, seen from outside: the real `smimeproxy serve`, in
// front of the lab's Postfix, takes 50 MiB submissions that it signs and
// encrypts, one and six at once, and its peak resident memory (VmHWM) stays
// under the budget plus a constant, 160 MiB: the headroom the process adds
// to the budget for its Go memory limit, and the program itself (14 MiB
// resident at start) with what the runtime overshoots that soft limit by
// while a collection runs. Without the budget and the limit, six at once
// peaked at 2.2 GiB.
const (
	memBudgetMB   = 384      // holds one 50 MiB message being signed and encrypted (7 times its size)
	memHeadroomMB = 96       // cmd/smimeproxy's memoryHeadroom
	memProgramMB  = 64       // the program, and the runtime's overshoot of its memory limit
	memMessage    = 50 << 20 // bytes
)

func TestLabMemory(t *testing.T) {
	l := lab.Start(t)
	p := testPKI(t)
	ids := labIdentities(t, p)
	proc := serveLab(t, serveproc.Binary(t), l, p, ids.alice, ids.bob, memBudgetMB)
	alice := l.User(t, "alice")
	bound := int64(memBudgetMB+memHeadroomMB+memProgramMB) << 20
	t.Logf("resident after start: %d MiB; bound: %d MiB", proc.RSS(t)>>20, bound>>20)

	for _, n := range []int{1, 6} {
		t.Run(fmt.Sprintf("%d at once", n), func(t *testing.T) {
			marker := marker(t)
			since := time.Now().Add(-time.Second) // file times are coarser than the clock
			codes := make([]int, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					header := fmt.Sprintf("From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: memory %s\r\nMessage-ID: <%s.%d@example.test>\r\n", marker, marker, i)
					codes[i] = submitCode(t, proc.SMTP[0], alice, header)
				})
			}
			wg.Wait()
			peak := proc.PeakRSS(t)
			t.Logf("replies %v; peak resident %d MiB", codes, peak>>20)
			var accepted []string
			for i, code := range codes {
				switch {
				case code == 250:
					accepted = append(accepted, fmt.Sprintf("%s.%d@example.test", marker, i))
				case code/100 != 4:
					t.Errorf("message %d got %d, want 250 or a temporary failure", i, code)
				}
			}
			if n == 1 && len(accepted) != 1 {
				t.Fatal("the one message was not accepted")
			}
			if peak > bound {
				t.Errorf("peak resident memory %d MiB, over the budget plus %d MiB, %d MiB", peak>>20, memHeadroomMB+memProgramMB, bound>>20)
			}
			maildir := l.Maildir("bob@example.test")
			found := delivered(t, maildir, marker, len(accepted), since)
			for _, id := range accepted {
				if len(found[id]) != 1 {
					t.Errorf("%s arrived %d times, want once", id, len(found[id]))
				}
			}
			if len(found) != len(accepted) {
				t.Errorf("%d messages arrived, %d were accepted", len(found), len(accepted))
			}
			for _, files := range found {
				for _, f := range files {
					_ = os.Remove(f) // 70 MB each: the lab is shared
				}
			}
		})
	}
	proc.Stop(t)
}

// submitCode sends a memMessage message as u to bob through the proxy at
// addr, and returns the final reply's code: 250 when it was accepted.
func submitCode(t *testing.T, addr string, u lab.User, header string) int {
	c, err := gosmtp.Dial(addr)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", u.Address, u.Password)); err != nil {
		t.Errorf("AUTH: %v", err)
		return 0
	}
	err = c.SendMail(u.Address, []string{"bob@example.test"}, strings.NewReader(attachmentMessageFrom(header, memMessage)))
	if se, ok := errors.AsType[*gosmtp.SMTPError](err); ok {
		return se.Code
	} else if err != nil {
		t.Errorf("submit: %v", err)
		return 0
	}
	return 250
}

// delivered waits until want messages whose Message-ID holds marker are in
// the Maildir dir (and two seconds more, for late copies), and returns the
// files of each, by Message-ID. Only files changed since since are read,
// each once and only its start: the lab's Maildirs are shared and large.
func delivered(t testing.TB, dir, marker string, want int, since time.Time) map[string][]string {
	t.Helper()
	// A 70 MB message takes Postfix and Dovecot a while on a busy machine.
	deadline := time.Now().Add(3 * time.Minute)
	var settled time.Time
	ids := map[string]string{} // Message-ID by the unique part of a file's name
	for {
		found := map[string][]string{}
		for _, sub := range []string{"new", "cur"} {
			entries, err := os.ReadDir(filepath.Join(dir, sub))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			for _, e := range entries {
				key, _, _ := strings.Cut(e.Name(), ":")
				id, ok := ids[key]
				f := filepath.Join(dir, sub, e.Name())
				if !ok {
					if info, err := e.Info(); err != nil {
						continue // moved from new to cur meanwhile
					} else if !info.ModTime().Before(since) {
						id = messageID(f)
					}
					ids[key] = id
				}
				if id != "" && strings.Contains(id, marker) {
					found[id] = append(found[id], f)
				}
			}
		}
		switch {
		case len(found) >= want && settled.IsZero():
			settled = time.Now().Add(2 * time.Second)
		case !settled.IsZero() && time.Now().After(settled):
			return found
		case time.Now().After(deadline):
			t.Errorf("%d of %d messages arrived within 3 minutes", len(found), want)
			return found
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// messageID is the Message-ID in the first 16 KiB of the file f.
func messageID(f string) string {
	fh, err := os.Open(f)
	if err != nil {
		return ""
	}
	defer fh.Close()
	head := make([]byte, 16<<10)
	n, _ := io.ReadFull(fh, head)
	_, rest, ok := strings.Cut(string(head[:n]), "\nMessage-ID: <")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, ">")
	return id
}

// serveLab runs `smimeproxy serve` (bin) in front of the lab with sender's
// key, the recipient's certificate, a memory budget of budgetMB and no
// IMAP cache.
func serveLab(tb testing.TB, bin string, l *lab.Lab, p *pki, sender, rcpt *testpki.Identity, budgetMB int) *serveproc.Proc {
	tb.Helper()
	dir := tb.TempDir()
	newKeystoreAt(tb, filepath.Join(dir, "state", "keystore"), sender)
	certCacheAt(tb, filepath.Join(dir, "state", "certcache"), p, rcpt.Cert)
	cfg := filepath.Join(dir, "config.yaml")
	err := os.WriteFile(cfg, fmt.Appendf(nil, `smtp:
  listen: [{addr: "127.0.0.1:0", tls: none}]
  upstream: {addr: %q, tls: starttls, ca_file: %q}
imap:
  listen: [{addr: "127.0.0.1:0", tls: none}]
  upstream: {addr: %q, tls: starttls, ca_file: %q}
  cache_mb: 0
keystore: {dir: state/keystore}
trust: {system_roots: false}
metrics: {listen: ""}
log: {format: json}
memory_budget_mb: %d
`, l.Submission, l.CA, l.IMAP, l.CA, budgetMB), 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	return serveproc.Start(tb, bin, cfg, "SMIMEPROXY_PASSPHRASE="+testPassphrase)
}
