package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"smimeproxy/certcache"
	"smimeproxy/internal/demo"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
)

// waitFor polls the log until re matches, and returns the submatches.
func waitFor(t *testing.T, log *testutil.Buffer, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := rx.FindStringSubmatch(log.String()); m != nil {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the log never matched %q:\n%s", re, log.String())
	return nil
}

// TestServe runs serve against the demo's mail server: it signs what it
// relays, reloads on SIGHUP without dropping an open IMAP session, refuses a
// broken configuration, and stops cleanly.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	users := map[string]string{"alice@demo.test": "apw", "bob@demo.test": "bpw"}
	up, err := demo.StartUpstream(users, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	pki, err := demo.NewPKI([]string{"alice@demo.test", "bob@demo.test"})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := keystore.Create(filepath.Join(dir, "state", "keystore"), []byte("serve test"), &keystore.Options{KDF: &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := certcache.Open(filepath.Join(dir, "state", "certcache"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.Install(ks, cc); err != nil {
		t.Fatal(err)
	}

	metrics := testutil.UnusedAddr(t)
	cfgPath := filepath.Join(dir, "config.yaml")
	keystoreExtra := "" // more keys of the keystore section
	writeCfg := func(extra string) {
		cfg := fmt.Sprintf(`smtp:
  listen: [{addr: "127.0.0.1:0", tls: none}]
  upstream: {addr: %q, tls: none}
imap:
  listen: [{addr: "127.0.0.1:0", tls: none}]
  upstream: {addr: %q, tls: none}
keystore:
  dir: state/keystore
%s
trust:
  system_roots: false
metrics:
  listen: %q
shutdown_timeout: 5s
%s`, up.SMTPAddr, up.IMAPAddr, keystoreExtra, metrics, extra)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("policy:\n  encrypt: never\n")

	var log testutil.Buffer
	hup := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &log, hup: hup,
			getenv: func(k string) string {
				if k == passphraseEnv {
					return "serve test"
				}
				return ""
			}}
		done <- run(ctx, []string{"serve", "--config", cfgPath}, e)
	}()
	m := waitFor(t, &log, `msg="smimeproxy started" smtp=\[([0-9.:]+)\] imap=\[([0-9.:]+)\]`)
	smtpAddr, imapAddr := m[1], m[2]
	if code, body := get(t, "http://"+metrics+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %q, want 200", code, body)
	}

	send := func(subject string) []byte {
		t.Helper()
		msg := "From: alice@demo.test\r\nTo: bob@demo.test\r\nSubject: " + subject + "\r\n\r\nHello\r\n"
		if _, err := submit(smtpAddr, "alice@demo.test", "apw", "bob@demo.test", msg); err != nil {
			t.Fatalf("submit %q: %v", subject, err)
		}
		got, err := fetchLast(ctx, up.IMAPAddr, "bob@demo.test", "bpw")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := send("first"); !bytes.Contains(got, []byte("application/pkcs7-signature")) {
		t.Errorf("the first message reached the upstream unsigned:\n%s", got)
	}

	// An IMAP session opened before the reload must live through it.
	ic, err := imapclient.DialInsecure(imapAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	if err := ic.Login("bob@demo.test", "bpw").Wait(); err != nil {
		t.Fatal(err)
	}

	writeCfg("policy:\n  sign: never\n  encrypt: never\n")
	hup <- syscall.SIGHUP
	waitFor(t, &log, `msg=reloaded`)
	if got := send("second"); bytes.Contains(got, []byte("pkcs7")) {
		t.Errorf("after reloading sign: never, the message was still transformed:\n%s", got)
	}
	if err := ic.Noop().Wait(); err != nil {
		t.Errorf("the IMAP session opened before the reload: NOOP = %v", err)
	}

	writeCfg("policy:\n  sign: sometimes\n")
	hup <- syscall.SIGHUP
	waitFor(t, &log, `reload refused; the running configuration stays.*policy.sign`)
	if got := send("third"); bytes.Contains(got, []byte("pkcs7")) {
		t.Errorf("a refused reload changed the policy:\n%s", got)
	}

	// A passphrase file that would not unlock the keystore at the next
	// start is refused now.
	wrong := filepath.Join(dir, "wrong-passphrase")
	if err := os.WriteFile(wrong, []byte("not the passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keystoreExtra = fmt.Sprintf("  passphrase_file: %q", wrong)
	writeCfg("policy:\n  encrypt: never\n")
	keystoreExtra = ""
	hup <- syscall.SIGHUP
	waitFor(t, &log, `reload refused; the running configuration stays.*does not unlock.*wrong passphrase`)
	if got := send("fourth"); bytes.Contains(got, []byte("pkcs7")) {
		t.Errorf("a reload refused for its passphrase changed the policy:\n%s", got)
	}

	// A key file changed without the passphrase is named in the log.
	files, err := filepath.Glob(filepath.Join(dir, "state", "keystore", "keys", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	tampered := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte("bob@demo.test")) {
			tampered++
			if err := os.WriteFile(f, bytes.ReplaceAll(data, []byte("bob@demo.test"), []byte("eve@demo.test")), 0o600); err != nil {
				t.Fatal(err)
			}
			writeCfg("policy:\n  encrypt: never\n")
			hup <- syscall.SIGHUP
			waitFor(t, &log, `level=ERROR msg="key refused.*file=`+regexp.QuoteMeta(f))
		}
	}
	if tampered != 1 {
		t.Fatalf("changed %d key files for bob, want 1", tampered)
	}

	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("serve exited %d after SIGTERM, want 0; log:\n%s", code, log.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
	if _, err := net.DialTimeout("tcp", smtpAddr, time.Second); err == nil {
		t.Error("the SMTP listener still accepts after serve returned")
	}
}
