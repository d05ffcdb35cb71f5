package smtp

import (
	"bytes"
	"crypto/x509"
	"os/exec"
	"strings"
	"testing"

	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
)

// openssl reads what the proxy sends: its signatures verify, and each
// recipient (the sender too) decrypts.

// openSSL runs openssl with args, msg on stdin, and returns stdout.
func openSSL(t testing.TB, msg []byte, args ...string) []byte {
	t.Helper()
	bin := testutil.NeedTool(t, "openssl")
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(msg), &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, errb.Bytes())
	}
	return out.Bytes()
}

// openSSLVerify has openssl verify msg against caFile and returns the
// signed content.
func openSSLVerify(t testing.TB, msg []byte, caFile string) []byte {
	t.Helper()
	return openSSL(t, msg, "cms", "-verify", "-CAfile", caFile, "-purpose", "smimesign")
}

// openSSLDecrypt has openssl decrypt msg with id's key.
func openSSLDecrypt(t testing.TB, msg []byte, id *testpki.Identity) []byte {
	t.Helper()
	dir := t.TempDir()
	cert, key, _ := testpki.WriteIdentity(t, dir, "id", id)
	return openSSL(t, msg, "cms", "-decrypt", "-recip", cert, "-inkey", key)
}

func TestOpenSSLReadsWhatItSends(t *testing.T) {
	p := testPKI(t)
	body := "Hi Bob,\r\nthe figures are in.\r\n"
	t.Run("signed", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.login().send("alice@example.com", []string{"bob@example.org"}, message("bob@example.org", "Figures", body))
		txns := e.up.transactions()
		if len(txns) != 1 {
			t.Fatalf("upstream got %d messages", len(txns))
		}
		if content := openSSLVerify(t, txns[0].data, p.caFile); !bytes.Contains(content, []byte("the figures are in.")) {
			t.Errorf("openssl verified content %q, want the body", content)
		}
	})
	t.Run("encrypted", func(t *testing.T) {
		e := newEnv(t, envOptions{certs: []*x509.Certificate{p.bob.Cert}})
		e.login().send("alice@example.com", []string{"bob@example.org"}, message("bob@example.org", "Figures", body))
		txns := e.up.transactions()
		if len(txns) != 1 {
			t.Fatalf("upstream got %d messages", len(txns))
		}
		for _, reader := range []*testpki.Identity{p.bob, p.alice} {
			inner := openSSLDecrypt(t, txns[0].data, reader)
			if content := openSSLVerify(t, inner, p.caFile); !bytes.Contains(content, []byte("the figures are in.")) {
				t.Errorf("decrypted with %s's key and verified: %q, want the body", reader.Cert.EmailAddresses[0], content)
			}
		}
	})
}
