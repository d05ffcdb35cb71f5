// Package testpeer drives GnuPG's gpgsm as a real S/MIME peer in tests, in a
// throwaway home of its own.
package testpeer

import (
	"bytes"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
)

// Passphrase protects the keys gpgsm holds, and the PKCS #12 files that
// carry them in.
const Passphrase = "test passphrase"

// Gpgsm is gpgsm with a GNUPGHOME of its own that trusts one root, checks no
// CRLs and takes passphrases from the test. Relative file names are in Dir.
type Gpgsm struct {
	Dir     string
	bin     string
	openssl string
	env     []string
}

// NewGpgsm makes the home and imports root; gpg-agent is killed at cleanup.
func NewGpgsm(t testing.TB, root *x509.Certificate) *Gpgsm {
	t.Helper()
	g := &Gpgsm{Dir: t.TempDir(), bin: testutil.NeedTool(t, "gpgsm"), openssl: testutil.NeedTool(t, "openssl")}
	gpgconf := testutil.NeedTool(t, "gpgconf")
	home := filepath.Join(g.Dir, "gnupg")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	g.env = []string{"GNUPGHOME=" + home}
	testpki.WriteFile(t, home, "gpgsm.conf", []byte("disable-crl-checks\ndisable-trusted-cert-crl-check\ndisable-dirmngr\n"))
	testpki.WriteFile(t, home, "gpg-agent.conf", []byte("allow-loopback-pinentry\n"))
	sum := sha1.Sum(root.Raw)
	testpki.WriteFile(t, home, "trustlist.txt", []byte(strings.ToUpper(hex.EncodeToString(sum[:]))+" S\n"))
	t.Cleanup(func() {
		cmd := exec.Command(gpgconf, "--kill", "all")
		cmd.Env = append(os.Environ(), g.env...)
		_ = cmd.Run()
	})
	g.Run(t, nil, "--batch", "--import", g.Write(t, "root.crt", testpki.CertPEM(root)))
	return g
}

// Run runs gpgsm and returns its standard output, failing the test on a
// non-zero exit.
func (g *Gpgsm) Run(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	out, stderr, err := g.Try(stdin, args...)
	if err != nil {
		t.Fatalf("gpgsm %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// Try runs gpgsm and returns its standard output, standard error and exit error.
func (g *Gpgsm) Try(stdin []byte, args ...string) (out, stderr []byte, err error) {
	return g.exec(g.bin, g.env, stdin, args...)
}

// WithPassphrase runs gpgsm in batch mode, answering the passphrase prompt
// with Passphrase.
func (g *Gpgsm) WithPassphrase(t testing.TB, args ...string) []byte {
	t.Helper()
	return g.Run(t, []byte(Passphrase+"\n"), append([]string{"--batch", "--pinentry-mode", "loopback", "--passphrase-fd", "0"}, args...)...)
}

func (g *Gpgsm) exec(bin string, env []string, stdin []byte, args ...string) ([]byte, []byte, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = g.Dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	return out.Bytes(), stderr.Bytes(), err
}

// Write puts data in Dir and returns the file's name.
func (g *Gpgsm) Write(t testing.TB, name string, data []byte) string {
	t.Helper()
	testpki.WriteFile(t, g.Dir, name, data)
	return name
}

// Read returns the contents of a file in Dir.
func (g *Gpgsm) Read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(g.Dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ImportCert gives gpgsm a certificate without its key.
func (g *Gpgsm) ImportCert(t testing.TB, name string, c *x509.Certificate) {
	t.Helper()
	g.Run(t, nil, "--batch", "--import", g.Write(t, name+".crt", testpki.CertPEM(c)))
}

// ImportIdentity gives gpgsm id's key and certificates, through a PKCS #12
// file that openssl makes in the legacy encryption that gpgsm 2.2 reads.
func (g *Gpgsm) ImportIdentity(t testing.TB, name string, id *testpki.Identity) {
	t.Helper()
	g.Write(t, name+".crt", testpki.CertPEM(id.Cert))
	g.Write(t, name+".key", testpki.KeyPEM(t, id.Key))
	args := []string{"pkcs12", "-export", "-in", name + ".crt", "-inkey", name + ".key", "-passout", "pass:" + Passphrase,
		"-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1"}
	if len(id.Chain) > 0 {
		args = append(args, "-certfile", g.Write(t, name+".chain.pem", testpki.CertPEM(id.Chain...)))
	}
	g.ImportPKCS12(t, name, func() []byte {
		out, errOut, err := g.exec(g.openssl, nil, nil, args...)
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		return out
	})
}

// ImportPKCS12 gives gpgsm the key and certificates in a PKCS #12 file that
// export makes, protected by Passphrase.
//
// gpgsm 2.2.40 rejects about one such file in forty as if the passphrase were
// wrong ("possibly bad passphrase given"), always the same file, which openssl
// reads fine: its PKCS #12 parser trips over some encodings. A file exported
// again has a new salt and IV, so a few exports get one it reads.
func (g *Gpgsm) ImportPKCS12(t testing.TB, name string, export func() []byte) {
	t.Helper()
	var stderr []byte
	for range 5 {
		g.Write(t, name+".p12", export())
		_, errOut, err := g.Try([]byte(Passphrase+"\n"), "--batch", "--pinentry-mode", "loopback", "--passphrase-fd", "0", "--import", name+".p12")
		if err == nil {
			return
		}
		stderr = errOut
	}
	t.Fatalf("gpgsm --import of %s.p12 failed five times:\n%s", name, stderr)
}
