package main

import (
	"regexp"
	"strings"
	"testing"

	"smimeproxy/internal/revtest"
	"smimeproxy/internal/testpki"
)

// TestRevocationCommands: certs check asks now, certs show and identities
// print what was found and when, and message verify reports a signature
// by a revoked certificate as revoked; all against openssl's OCSP
// responder.
func TestRevocationCommands(t *testing.T) {
	c := newCLI(t)
	ca := testpki.NewCA(t, "Revocation CA")
	rt := revtest.New(t, ca)
	alice := rt.Issue(t, "alice@example.com", &testpki.Options{Key: "p256"})
	bob := rt.Issue(t, "bob@example.org", &testpki.Options{Key: "p256"})
	mallory := rt.Issue(t, "mallory@example.org", &testpki.Options{Key: "p256"})
	rt.Revoke(bob.Cert, "keyCompromise")
	rt.Revoke(mallory.Cert, "keyCompromise")
	rt.Start(t)
	for name, id := range map[string]*testpki.Identity{"alice": alice, "mallory": mallory} {
		certFile, keyFile, _ := testpki.WriteIdentity(t, c.dir, name, id)
		pw := testpki.WriteFile(t, c.dir, name+".pw", []byte("pw"))
		openssl(t, "pkcs12", "-export", "-in", certFile, "-inkey", keyFile, "-passout", "file:"+pw, "-out", c.path(name+".p12"))
		c.ok("import", c.keystore(), c.path(name+".p12"), "--password-file", pw)
	}
	c.ok("trust", "add", c.keystore(), testpki.WriteFile(t, c.dir, "ca.pem", testpki.CertPEM(ca.Cert)))
	c.ok("certs", "import", c.keystore(), testpki.WriteFile(t, c.dir, "bob.pem", testpki.CertPEM(bob.Cert)))

	if out := c.ok("certs", "show", c.keystore(), "bob@example.org"); !strings.Contains(out, "Revocation:   not checked yet") {
		t.Errorf("certs show before any check = %q, want not checked yet", out)
	}
	out := c.ok("certs", "check", c.keystore(), "bob@example.org")
	if !regexp.MustCompile(`bob@example.org +[0-9a-f]{16} +revoked .*\(keyCompromise\), by OCSP http://127\.0\.0\.1:\d+/ocsp, checked `).MatchString(out) ||
		!strings.Contains(out, "Outgoing mail to bob@example.org cannot be encrypted: no valid certificate for bob@example.org:") {
		t.Errorf("certs check bob = %q, want his certificate revoked and no encryption", out)
	}
	if out := c.ok("certs", "show", c.keystore(), "bob@example.org"); !strings.Contains(out, "Revocation:   revoked") || !strings.Contains(out, "checked 20") {
		t.Errorf("certs show after the check = %q, want revoked, with when", out)
	}

	if out := c.ok("identities", c.keystore()); !regexp.MustCompile(`alice@example.com .* -\s+-\n`).MatchString(out) {
		t.Errorf("identities before any check = %q, want alice not checked", out)
	}
	out = c.ok("certs", "check", c.keystore())
	for _, want := range []string{"alice@example.com (yours)", "mallory@example.org (yours)", "bob@example.org"} {
		if !strings.Contains(out, want) {
			t.Errorf("certs check = %q, want %q", out, want)
		}
	}
	out = c.ok("identities", c.keystore())
	if !regexp.MustCompile(`alice@example.com .* good +20\d\d-\d\d-\d\d \d\d:\d\d\n`).MatchString(out) ||
		!regexp.MustCompile(`mallory@example.org .* revoked +20\d\d-`).MatchString(out) {
		t.Errorf("identities after the check = %q, want alice good and mallory revoked, with when", out)
	}

	msg := "From: mallory@example.org\r\nTo: alice@example.com\r\nSubject: hi\r\n\r\nTrust me.\r\n"
	c.stdin = []byte(msg)
	signed := c.ok("message", "sign", c.keystore())
	c.stdin = []byte(signed)
	code, _, errOut := c.run("message", "verify", c.keystore(), "--harvest")
	if code != exitFailure || !strings.Contains(errOut, "signature: revoked, by mallory@example.org") || !strings.Contains(errOut, "keyCompromise") {
		t.Errorf("message verify of mallory's signature: exit %d, %q; want 1, revoked (keyCompromise)", code, errOut)
	}
	if out := c.ok("certs", "list", c.keystore()); strings.Contains(out, "mallory") {
		t.Errorf("certs list after verifying mallory's revoked signature = %q, want her certificate not harvested", out)
	}
}
