package smime_test

import (
	"bytes"
	"crypto/x509"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"smimeproxy/internal/testpki"
	"smimeproxy/smime"
)

// pki is the set of test identities most tests share.
type pki struct {
	ca    *testpki.CA
	alice *testpki.Identity // RSA, signs
	bob   *testpki.Identity // RSA, reads
	carol *testpki.Identity // ECDSA P-256, signs and reads
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	ca := testpki.NewCA(t, "smime test root")
	return &pki{
		ca:    ca,
		alice: ca.Issue(t, "alice@example.com", nil),
		bob:   ca.Issue(t, "bob@example.com", nil),
		carol: ca.Issue(t, "carol@example.com", &testpki.Options{Key: "p256"}),
	}
}

func identity(id *testpki.Identity) *smime.Identity {
	return &smime.Identity{Cert: id.Cert, Key: id.Key, Chain: id.Chain}
}

func keyPair(id *testpki.Identity) smime.KeyPair {
	return smime.KeyPair{Cert: id.Cert, Key: id.Key}
}

func (p *pki) verifyOpts() smime.VerifyOptions {
	return smime.VerifyOptions{Roots: p.ca.Pool()}
}

// testMessage reads testdata/name.
func testMessage(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// message makes a small RFC 5322 message from alice to bob.
func message(from, body string) []byte {
	return []byte("From: " + from + "\r\nTo: bob@example.com\r\nSubject: test\r\n" +
		"Message-ID: <t@example.com>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body)
}

// split returns the header block (with its blank line) and the body of msg.
func split(t testing.TB, msg []byte) (header, body []byte) {
	t.Helper()
	for _, sep := range []string{"\r\n\r\n", "\n\n"} {
		if i := bytes.Index(msg, []byte(sep)); i >= 0 {
			return msg[:i+len(sep)], msg[i+len(sep):]
		}
	}
	t.Fatalf("no header/body separator in %q", msg)
	return nil, nil
}

// headerValue returns the unfolded value of the first field called name in
// the header block.
func headerValue(header []byte, name string) string {
	lines := strings.Split(strings.ReplaceAll(string(header), "\r\n", "\n"), "\n")
	for i, l := range lines {
		k, v, ok := strings.Cut(l, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), name) {
			continue
		}
		for _, c := range lines[i+1:] {
			if !strings.HasPrefix(c, " ") && !strings.HasPrefix(c, "\t") {
				break
			}
			v += " " + strings.TrimSpace(c)
		}
		return strings.TrimSpace(v)
	}
	return ""
}

func mediaType(t testing.TB, header []byte) (string, map[string]string) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(headerValue(header, "Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type %q: %v", headerValue(header, "Content-Type"), err)
	}
	return mt, params
}

// wantStatus checks a list of signatures against the expected statuses.
func wantStatus(t testing.TB, what string, sigs []*smime.Signature, want ...smime.Status) {
	t.Helper()
	var got []string
	for _, s := range sigs {
		got = append(got, s.Status.String()+" ("+s.Reason+")")
	}
	if len(sigs) != len(want) {
		t.Fatalf("%s: signatures %q, want %v", what, got, want)
	}
	for i, s := range sigs {
		if s.Status != want[i] {
			t.Errorf("%s: signature %d = %s, want %v", what, i, got[i], want[i])
		}
	}
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, l := range list {
		if l.Equal(c) {
			return true
		}
	}
	return false
}
