package smime_test

import (
	"bytes"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
)

// This file holds the helpers for the tests against real peers: OpenSSL and
// GnuPG's gpgsm, driven as a user would drive them.

// peer runs one program in a scratch directory.
type peer struct {
	bin string
	dir string
	env []string
}

func newPeer(t *testing.T, name string) *peer {
	t.Helper()
	return &peer{bin: testutil.NeedTool(t, name), dir: t.TempDir()}
}

// run runs the program and returns its stdout, failing the test on a
// non-zero exit.
func (p *peer) run(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	out, stderr, err := p.try(stdin, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(p.bin), strings.Join(args, " "), err, stderr)
	}
	return out
}

// try runs the program and returns its stdout, its stderr and its exit error.
func (p *peer) try(stdin []byte, args ...string) ([]byte, []byte, error) {
	cmd := exec.Command(p.bin, args...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	return out.Bytes(), stderr.Bytes(), err
}

// write puts data in the scratch directory and returns the file's name.
func (p *peer) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	testpki.WriteFile(t, p.dir, name, data)
	return name
}

func (p *peer) read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeIdentity writes id's certificate, key and chain as PEM and returns
// their names.
func (p *peer) writeIdentity(t *testing.T, base string, id *testpki.Identity) (cert, key, chain string) {
	t.Helper()
	cert = p.write(t, base+".crt", testpki.CertPEM(id.Cert))
	key = p.write(t, base+".key", testpki.KeyPEM(t, id.Key))
	chain = p.write(t, base+".chain.pem", testpki.CertPEM(id.Chain...))
	return cert, key, chain
}

// mimeBody returns the decoded body of a single-part MIME message or entity.
func mimeBody(t *testing.T, msg []byte) []byte {
	t.Helper()
	_, body := split(t, msg)
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(body)), ""))
	if err != nil {
		t.Fatalf("base64 body: %v", err)
	}
	return der
}

// signedParts returns the signed part and the decoded signature of a
// multipart/signed message, as RFC 1847 delimits them.
func signedParts(t *testing.T, msg []byte) (content, sig []byte) {
	t.Helper()
	hdr, body := split(t, msg)
	_, params := mediaType(t, hdr)
	delim := "\r\n--" + params["boundary"]
	parts := strings.Split(string(toCRLF(body)), delim)
	if len(parts) != 4 {
		t.Fatalf("multipart/signed with %d pieces", len(parts))
	}
	return []byte(strings.TrimPrefix(parts[1], "\r\n")), mimeBody(t, []byte(strings.TrimPrefix(parts[2], "\r\n")))
}

func toCRLF(b []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}

// contentEntity returns what a wrapped message holds: its Content-* fields,
// a blank line and its body.
func contentEntity(t *testing.T, msg []byte) []byte {
	t.Helper()
	hdr, body := split(t, msg)
	var b bytes.Buffer
	inContent := false
	for _, l := range strings.SplitAfter(string(hdr), "\r\n") {
		switch {
		case l == "\r\n" || l == "":
		case strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t"):
			if inContent {
				b.WriteString(l)
			}
		default:
			inContent = strings.HasPrefix(strings.ToLower(l), "content-")
			if inContent {
				b.WriteString(l)
			}
		}
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// wrapSigned builds a multipart/signed message around content and a DER signature.
func wrapSigned(content, sig []byte, micalg string) []byte {
	var b bytes.Buffer
	b.WriteString("From: alice@example.com\r\nTo: bob@example.com\r\nSubject: from a peer\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=" + micalg + "; boundary=\"peer-boundary\"\r\n\r\n" +
		"--peer-boundary\r\n")
	b.Write(content)
	b.WriteString("\r\n--peer-boundary\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n")
	b.WriteString(base64.StdEncoding.EncodeToString(sig))
	b.WriteString("\r\n--peer-boundary--\r\n")
	return b.Bytes()
}

// wrapPKCS7 builds an application/pkcs7-mime message around a DER CMS object.
func wrapPKCS7(der []byte, smimeType string) []byte {
	return []byte("From: alice@example.com\r\nTo: bob@example.com\r\nSubject: from a peer\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: application/pkcs7-mime; smime-type=" + smimeType + "; name=smime.p7m\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(der) + "\r\n")
}
