package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"smimeproxy/certcache"
	"smimeproxy/internal/lab"
	"smimeproxy/internal/ldaptest"
	"smimeproxy/internal/revtest"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
)

// TestServeDirectoryRevocation runs serve, configured with the test
// directory (slapd) and revocation checks against openssl's OCSP responder
// and CRL, in front of the lab's Postfix, and reads what Dovecot stored:
// a first message to a person known only to the directory goes out
// encrypted; one to a person whose certificate is revoked goes signed
// only, and is refused when encryption is required; a responder that
// never answers costs the message the revocation timeout, not a stalled
// session.
func TestServeDirectoryRevocation(t *testing.T) {
	l := lab.Start(t)
	srv := ldaptest.Start(t)
	ou := srv.OU(t)
	dir := t.TempDir()

	ca := testpki.NewCA(t, "Directory CA")
	rt := revtest.New(t, ca)
	bob := rt.Issue(t, "bob@example.test", &testpki.Options{Key: "p256"})
	carol := rt.Issue(t, "carol@example.org", &testpki.Options{Key: "p256"})
	rt.Revoke(carol.Cert, "keyCompromise")
	rt.Start(t)
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	}))
	t.Cleanup(silent.Close)
	srv.AddPerson(t, ou, "bob@example.test", map[string][][]byte{"userCertificate;binary": {bob.Cert.Raw}})
	srv.AddPerson(t, ou, "carol@example.org", map[string][][]byte{"userCertificate;binary": {carol.Cert.Raw}})

	// alice's own key signs; her certificate, in the keystore, is what mail
	// to her is encrypted to, and its responder never answers.
	ks, err := keystore.Create(filepath.Join(dir, "state", "keystore"), []byte("lab test"), &keystore.Options{KDF: &keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	alice := ca.Issue(t, "alice@example.test", &testpki.Options{Key: "p256", OCSPServer: []string{silent.URL}})
	p12, err := pkcs12.Modern.Encode(alice.Key, alice.Cert, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.ImportPKCS12(p12, "pw"); err != nil {
		t.Fatal(err)
	}
	cc, err := certcache.Open(filepath.Join(dir, "state", "certcache"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Trust(ca.Cert); err != nil {
		t.Fatal(err)
	}

	metrics := testutil.UnusedAddr(t)
	cfgPath := filepath.Join(dir, "config.yaml")
	cfg := fmt.Sprintf(`server_name: proxy.test
smtp:
  listen: [{addr: "127.0.0.1:0", tls: none}]
  upstream: {addr: %q, tls: starttls, ca_file: %q}
imap:
  listen: [{addr: "127.0.0.1:0", tls: none}]
  upstream: {addr: %q, tls: starttls, ca_file: %q}
keystore:
  dir: state/keystore
trust:
  system_roots: false
directories:
  - url: %s
    ca_file: %s
    base: %q
    bind_dn: %q
    password_file: %s
revocation:
  timeout: 1s
metrics:
  listen: %q
shutdown_timeout: 5s
`, l.Submission, l.CA, l.IMAP, l.CA, srv.URL, srv.CA, ou, srv.BindDN, srv.BindPassFile, metrics)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var log testutil.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &log,
			getenv: func(k string) string {
				if k == passphraseEnv {
					return "lab test"
				}
				return ""
			}}
		done <- run(ctx, []string{"serve", "--config", cfgPath}, e)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("serve exited %d:\n%s", code, log.String())
		}
	})
	smtpAddr := waitFor(t, &log, `msg="smimeproxy started" smtp=\[([0-9.:]+)\]`)[1]
	user := l.User(t, "alice")
	mark := fmt.Sprintf("certs-lab-%d", time.Now().UnixNano())

	// send submits a message from alice, giving up after a minute (the
	// silent responder's), and returns the proxy's reply.
	send := func(to, subject string) (string, error) {
		t.Helper()
		msg := fmt.Sprintf("From: alice@example.test\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.test>\r\n\r\nFor %s only.\r\n", to, subject, subject, to)
		type result struct {
			reply string
			err   error
		}
		ch := make(chan result, 1)
		go func() {
			r, err := submit(smtpAddr, user.Address, user.Password, to, msg)
			ch <- result{r, err}
		}()
		select {
		case r := <-ch:
			return r.reply, r.err
		case <-time.After(45 * time.Second):
			t.Fatalf("sending to %s: no reply within 45s; the SMTP session stalled", to)
			return "", nil
		}
	}

	// A first message to bob, known only to the directory: encrypted to
	// his certificate there, which openssl decrypts with his key.
	if _, err := send("bob@example.test", mark+"-bob"); err != nil {
		t.Fatalf("send to bob: %v", err)
	}
	got := l.WaitMessage(t, "bob@example.test", mark+"-bob")
	if !strings.Contains(string(got), "application/pkcs7-mime") {
		t.Fatalf("bob's message as stored:\n%s\nwant it encrypted (application/pkcs7-mime)", got)
	}
	encFile := testpki.WriteFile(t, dir, "bob.eml", got)
	bobCrt, bobKey, _ := testpki.WriteIdentity(t, dir, "bob", bob)
	if plain := openssl(t, "cms", "-decrypt", "-in", encFile, "-recip", bobCrt, "-inkey", bobKey); !strings.Contains(plain, "For bob@example.test only.") {
		t.Errorf("openssl cms -decrypt with bob's key from the directory = %q, want the message", plain)
	}
	if n := len(cc.List()); n != 0 {
		t.Errorf("the certificate cache holds %d certificates after a directory lookup, want none (the directory stays the authority)", n)
	}

	// carol's certificate is revoked: signed only, never encrypted to it.
	if _, err := send("carol@example.org", mark+"-carol"); err != nil {
		t.Fatalf("send to carol: %v", err)
	}
	got = l.WaitMessage(t, "carol@example.org", mark+"-carol")
	if !strings.Contains(string(got), "multipart/signed") || strings.Contains(string(got), "application/pkcs7-mime") {
		t.Errorf("carol's message as stored:\n%s\nwant it signed only", got)
	}
	// With encryption required, refused, saying why.
	_, err = send("carol@example.org", "[encrypt] "+mark+"-carol-required")
	if err == nil || !strings.Contains(err.Error(), "554") || !strings.Contains(err.Error(), "carol@example.org (certificate revoked)") {
		t.Errorf("send to carol with [encrypt] = %v, want a 554 refusal naming her revoked certificate", err)
	}

	// alice's responder never answers: serve asks it about her own
	// certificate once, giving up after the timeout (1s); mail to her, which
	// is encrypted to that certificate from the keystore, goes encrypted
	// (soft-fail), and nobody asks the responder again.
	for i := range 2 {
		start := time.Now()
		if _, err := send("alice@example.test", fmt.Sprintf("%s-slow-%d", mark, i)); err != nil {
			t.Fatalf("send to alice with a silent responder: %v", err)
		}
		t.Logf("message %d with a silent responder took %v", i, time.Since(start))
		got = l.WaitMessage(t, "alice@example.test", fmt.Sprintf("%s-slow-%d", mark, i))
		if !strings.Contains(string(got), "application/pkcs7-mime") {
			t.Errorf("alice's message %d as stored is not encrypted; want soft-fail to encrypt", i)
		}
	}
	if n := strings.Count(log.String(), `msg="OCSP responder did not answer" url=`+silent.URL); n != 1 {
		t.Errorf("the log names the silent responder %d times, want once (then it is not asked for retry):\n%s", n, log.String())
	}
	if !strings.Contains(log.String(), "no answer within 1s") || !strings.Contains(log.String(), "revocation status unknown; the certificate is used") {
		t.Errorf("the log does not say the responder was given up after 1s and the certificate used:\n%s", log.String())
	}

	_, body := get(t, "http://"+metrics+"/metrics")
	for _, want := range []string{
		`smimeproxy_directory_lookups_total{result="found"} 2`,
		`smimeproxy_revocation_checks_total{method="ocsp",state="revoked"} 1`,
		`smimeproxy_revocation_verdicts_total{use="encrypt",verdict="unknown_soft_fail"}`,
		`smimeproxy_directory_lookup_seconds_count 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
