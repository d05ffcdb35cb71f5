package imap_test

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"smimeproxy/config"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
	"smimeproxy/keystore"
	"smimeproxy/proxy"
)

// Real clients against the proxy in front of the lab: curl and mbsync
// read S/MIME messages opened, over the proxy's implicit TLS listener.

// tlsEnv is the S/MIME environment with an implicit TLS listener, the pool
// that trusts its certificate, and that certificate's PEM file.
func tlsEnv(t *testing.T) (*env, *x509.CertPool, string) {
	t.Helper()
	p := testPKI(t)
	cert, pool := tlsCert(t)
	e := newEnv(t, envOptions{cert: cert, roots: []*x509.Certificate{p.ca.Root()}, configure: func(c *config.Config) {
		c.IMAP.Listen = []config.Listener{{Addr: "127.0.0.1:0", TLS: config.TLSImplicit}}
	}})
	e.keys.add("bob@example.test", keystore.KeyPair{KeyID: "bob", Cert: p.bob.Cert, Key: p.bob.Key})
	return e, pool, testpki.WriteFile(t, t.TempDir(), "ca.pem", testpki.CertPEM(leafOf(t, cert)))
}

// leafOf is the certificate a listener presents.
func leafOf(t testing.TB, c *proxy.Certificate) *x509.Certificate {
	t.Helper()
	kp, err := c.ServerConfig().GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func portOf(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

func TestCurl(t *testing.T) {
	curl := testutil.NeedTool(t, "curl")
	e, _, ca := tlsEnv(t)
	p := testPKI(t)
	box := e.mailbox(t, "bob", encrypted(t, plainMsg("for curl", "curl reads this"), p.bob))
	bob := e.lab.User(t, "bob")
	url := fmt.Sprintf("imaps://127.0.0.1:%s/%s;UID=1", portOf(e.addr()), box)
	cmd := exec.Command(curl, "--silent", "--show-error", "--cacert", ca, "--user", bob.Address+":"+bob.Password, url)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, stderr.Bytes())
	}
	if !bytes.Contains(out, []byte("curl reads this")) || !bytes.Contains(out, []byte("Authentication-Results: proxy.test;")) {
		t.Errorf("curl got\n%s", out)
	}
}

// TestMbsync: mbsync copies a mailbox through the proxy into a local
// Maildir; every message there is what the proxy serves.
func TestMbsync(t *testing.T) {
	mbsync := testutil.NeedTool(t, "mbsync")
	e, pool, ca := tlsEnv(t)
	p := testPKI(t)
	msgs := []string{
		plainMsg("mbsync plain", "plain text"),
		encrypted(t, plainMsg("mbsync secret", "secret text"), p.bob),
		encrypted(t, signed(t, p.alice, plainMsg("mbsync both", "signed secret")), p.bob),
		signed(t, p.alice, plainMsg("mbsync signed", "signed text")),
	}
	box := e.mailbox(t, "bob", msgs...)
	bob := e.lab.User(t, "bob")
	c := dialTLS(t, e.addr(), pool)
	c.login(bob)
	c.cmd("a EXAMINE "+box, "")
	var want []string
	for i := range msgs {
		want = append(want, literalOf(t, c.cmd(fmt.Sprintf("f UID FETCH %d BODY.PEEK[]", i+1), ""), "BODY[]"))
	}
	if want[0] != msgs[0] {
		t.Errorf("the plain message changed on its way")
	}

	dir := t.TempDir()
	rc := fmt.Sprintf(`IMAPAccount proxy
Host 127.0.0.1
Port %s
User %s
Pass %s
SSLType IMAPS
CertificateFile %s

IMAPStore remote
Account proxy

MaildirStore local
Path %s/mail/
Inbox %s/mail/INBOX

Channel test
Far :remote:%s
Near :local:%s
Sync Pull
Create Near
`, portOf(e.addr()), bob.Address, bob.Password, ca, dir, dir, box, box)
	rcFile := testpki.WriteFile(t, dir, "mbsyncrc", []byte(rc))
	if err := os.Mkdir(filepath.Join(dir, "mail"), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mbsync, "-c", rcFile, "test")
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mbsync: %v\n%s", err, out)
	}
	var got []string
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(dir, "mail", box, sub, "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(b))
		}
	}
	// mbsync stores lines with the system's LF, and adds an X-TUID field
	// of its own to find the messages it copied.
	norm := func(list []string) []string {
		var out []string
		for _, b := range list {
			var lines []string
			for _, l := range strings.Split(strings.ReplaceAll(b, "\r\n", "\n"), "\n") {
				if !strings.HasPrefix(l, "X-TUID: ") {
					lines = append(lines, l)
				}
			}
			out = append(out, strings.Join(lines, "\n"))
		}
		slices.Sort(out)
		return out
	}
	if g, w := norm(got), norm(want); !slices.Equal(g, w) {
		t.Errorf("the Maildir holds\n%q\nwant\n%q", g, w)
	}
}
