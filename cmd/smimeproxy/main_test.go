package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
)

// cli runs commands in process against one keystore directory.
type cli struct {
	t     *testing.T
	dir   string
	vars  map[string]string
	stdin []byte
}

func newCLI(t *testing.T) *cli {
	dir := t.TempDir()
	return &cli{t: t, dir: dir, vars: map[string]string{
		"HOME":                  dir,
		"SMIMEPROXY_PASSPHRASE": "correct horse battery staple",
	}}
}

// run runs smimeproxy with args (the keystore flag added to commands that
// take it) and returns the exit status and outputs.
func (c *cli) run(args ...string) (int, string, string) {
	c.t.Helper()
	var stdout, stderr bytes.Buffer
	e := &env{
		stdin:  bytes.NewReader(c.stdin),
		stdout: &stdout,
		stderr: &stderr,
		getenv: func(k string) string { return c.vars[k] },
	}
	c.stdin = nil
	code := run(context.Background(), args, e)
	return code, stdout.String(), stderr.String()
}

// ok runs a command that must succeed and returns its standard output.
func (c *cli) ok(args ...string) string {
	c.t.Helper()
	code, out, errOut := c.run(args...)
	if code != exitOK {
		c.t.Fatalf("smimeproxy %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (c *cli) path(name string) string { return filepath.Join(c.dir, name) }

func (c *cli) keystore() string { return "--keystore=" + c.path("state/keystore") }

func openssl(t *testing.T, args ...string) string {
	t.Helper()
	bin := testutil.NeedTool(t, "openssl")
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestCSRWalk walks what a person does with their CA: csr, the CA signs it
// (openssl), import, backup, and openssl reads the backup.
func TestCSRWalk(t *testing.T) {
	c := newCLI(t)
	ca := testpki.NewCA(t, "Walk CA")
	inter := ca.Intermediate(t, "Walk Issuing CA")
	caCert := testpki.WriteFile(t, c.dir, "inter.pem", testpki.CertPEM(inter.Cert))
	caKey := testpki.WriteFile(t, c.dir, "inter.key", testpki.KeyPEM(t, inter.Key))

	out := c.ok("csr", c.keystore(), "--email", "walk@example.com", "--name", "Walk Tester", "--out", c.path("walk.csr"))
	if !strings.Contains(out, "Created keystore") {
		t.Errorf("csr on a new keystore says %q, want it to say it created one", out)
	}
	if got := openssl(t, "req", "-in", c.path("walk.csr"), "-noout", "-verify", "-text"); !strings.Contains(got, "email:walk@example.com") {
		t.Fatalf("openssl req -text does not show the email SAN:\n%s", got)
	}
	if got := c.ok("identities", c.keystore()); !strings.Contains(got, "walk@example.com") || !strings.Contains(got, "pending") {
		t.Errorf("identities after csr = %q, want walk@example.com pending", got)
	}

	ext := testpki.WriteFile(t, c.dir, "ext.cnf", []byte("subjectAltName=email:walk@example.com\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n"))
	openssl(t, "x509", "-req", "-in", c.path("walk.csr"), "-CA", caCert, "-CAkey", caKey, "-CAcreateserial",
		"-days", "365", "-extfile", ext, "-out", c.path("walk.crt"))
	chain := testpki.WriteFile(t, c.dir, "chain.pem", append(must(os.ReadFile(c.path("walk.crt"))), testpki.CertPEM(inter.Cert, ca.Cert)...))

	out = c.ok("import", c.keystore(), chain)
	for _, want := range []string{"Joined the certificate for walk@example.com", "intermediate CA \"Walk Issuing CA\"", "Did not trust the root CA \"Walk CA\""} {
		if !strings.Contains(out, want) {
			t.Errorf("import said %q, want it to say %q", out, want)
		}
	}
	if got := c.ok("identities", c.keystore()); !strings.Contains(got, "active") {
		t.Errorf("identities after import = %q, want active", got)
	}

	pw := testpki.WriteFile(t, c.dir, "pw.txt", []byte("backup secret\n"))
	c.ok("backup", c.keystore(), "--email", "walk@example.com", "--out", c.path("walk.p12"), "--password-file", pw)
	if fi, err := os.Stat(c.path("walk.p12")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v; want mode 0600", err, fi.Mode())
	}
	dump := openssl(t, "pkcs12", "-in", c.path("walk.p12"), "-passin", "file:"+pw, "-nodes")
	if !strings.Contains(dump, "walk@example.com") || !strings.Contains(dump, "Walk Issuing CA") {
		t.Errorf("openssl pkcs12 output lacks the certificate or its chain:\n%s", dump)
	}
	keyFile := testpki.WriteFile(t, c.dir, "dump.pem", []byte(dump))
	fromBackup := openssl(t, "pkey", "-in", keyFile, "-pubout")
	fromCSR := openssl(t, "req", "-in", c.path("walk.csr"), "-noout", "-pubkey")
	if fromBackup != fromCSR {
		t.Errorf("the key in the backup does not match the CSR:\nbackup %s\ncsr %s", fromBackup, fromCSR)
	}

	code, _, errOut := c.run("backup", c.keystore(), "--email", "walk@example.com", "--out", c.path("walk.p12"), "--password-file", pw)
	if code != exitFailure || !strings.Contains(errOut, "--force") {
		t.Errorf("backup over an existing file: exit %d, %q; want 1 and a hint at --force", code, errOut)
	}
	code, _, errOut = c.run("backup", c.keystore(), "--email", "walk@example.com", "--out", c.path("small.p12"), "--password-file", pw, "--iterations", "4096")
	if code != exitOK || !strings.Contains(errOut, "warning: 4096 iterations") {
		t.Errorf("backup --iterations 4096: exit %d, %q; want 0 and a warning", code, errOut)
	}
	if got := openssl(t, "pkcs12", "-in", c.path("small.p12"), "-passin", "file:"+pw, "-info", "-noout"); !strings.Contains(got, "Iteration 4096") {
		t.Errorf("openssl pkcs12 -info of the --iterations 4096 backup: %q, want 4096 iterations", got)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestUsageErrors(t *testing.T) {
	c := newCLI(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"csr", "--email", "a@example.com", "--key-type", "rsa1024", "--out", "x"}, `invalid value "rsa1024" for --key-type; options are rsa2048, rsa3072, rsa4096, ecdsa-p256, ecdsa-p384`},
		{[]string{"csr", "--out", "x"}, "--email is required"},
		{[]string{"nosuch"}, `unknown command "nosuch"`},
		{[]string{"backup", "--email", "a@example.com"}, "--email and --out are required"},
		{[]string{"backup", "--email", "a@example.com", "--out", "x", "--iterations", "1000"}, "invalid value 1000 for --iterations; use at least 2048"},
		{[]string{"message", "sign", "--hash", "md5"}, `options are sha256, sha384, sha512`},
		{[]string{"message", "encrypt", "--cipher", "rc2"}, "options are aes-256-cbc"},
		{[]string{"certs", "show"}, "want 1 argument(s)"},
		{[]string{"identities", "--bogus"}, "flag provided but not defined: -bogus"},
	}
	for _, tc := range tests {
		code, _, errOut := c.run(tc.args...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("smimeproxy %s: exit %d, %q; want exit 2 and %q", strings.Join(tc.args, " "), code, errOut, tc.want)
		}
	}
	if code, out, _ := c.run("csr", "--help"); code != exitOK || !strings.Contains(out, "EXAMPLES") || !strings.Contains(out, "EXIT CODES") {
		t.Errorf("csr --help: exit %d, %q; want 0 with EXAMPLES and EXIT CODES", code, out)
	}
}

func TestWrongPassphraseChangesNothing(t *testing.T) {
	c := newCLI(t)
	c.ok("csr", c.keystore(), "--email", "a@example.com", "--key-type", "ecdsa-p256", "--out", c.path("a.csr"))
	before := snapshot(t, c.path("state"))
	c.vars["SMIMEPROXY_PASSPHRASE"] = "wrong"
	code, _, errOut := c.run("csr", c.keystore(), "--email", "b@example.com", "--key-type", "ecdsa-p256", "--out", c.path("b.csr"))
	if code != exitFailure || !strings.Contains(errOut, "wrong passphrase") {
		t.Fatalf("csr with a wrong passphrase: exit %d, %q; want 1 and 'wrong passphrase'", code, errOut)
	}
	if after := snapshot(t, c.path("state")); after != before {
		t.Errorf("a wrong passphrase changed the state directory:\nbefore %s\nafter %s", before, after)
	}
}

// snapshot lists the files under dir with their contents' lengths and modes.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		data := []byte{}
		if !d.IsDir() {
			data, _ = os.ReadFile(p)
		}
		b.WriteString(p + " " + fi.Mode().String() + " " + string(data) + "\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestPassphraseChange(t *testing.T) {
	c := newCLI(t)
	c.ok("csr", c.keystore(), "--email", "a@example.com", "--key-type", "ecdsa-p256", "--out", c.path("a.csr"))
	newPass := testpki.WriteFile(t, c.dir, "new.txt", []byte("a new passphrase\n"))
	c.ok("passphrase", c.keystore(), "--new-passphrase-file", newPass)
	code, _, errOut := c.run("csr", c.keystore(), "--email", "b@example.com", "--key-type", "ecdsa-p256", "--out", c.path("b.csr"))
	if code != exitFailure || !strings.Contains(errOut, "wrong passphrase") {
		t.Errorf("the old passphrase after a change: exit %d, %q; want it refused", code, errOut)
	}
	c.ok("csr", c.keystore(), "--passphrase-file", newPass, "--email", "b@example.com", "--key-type", "ecdsa-p256", "--out", c.path("b.csr"))
}

func TestImportPKCS12Warns(t *testing.T) {
	c := newCLI(t)
	ca := testpki.NewCA(t, "P12 CA")
	id := ca.Issue(t, "p12@example.com", nil)
	certFile, keyFile, _ := testpki.WriteIdentity(t, c.dir, "p12", id)
	pw := testpki.WriteFile(t, c.dir, "pw.txt", []byte("p12 secret"))
	openssl(t, "pkcs12", "-export", "-in", certFile, "-inkey", keyFile, "-passout", "file:"+pw, "-out", c.path("p12.p12"))

	code, _, _ := c.run("import", c.keystore(), c.path("p12.p12"), "--password-file", certFile)
	if code != exitFailure {
		t.Errorf("import with a wrong .p12 password: exit %d, want 1", code)
	}
	code, out, errOut := c.run("import", c.keystore(), c.path("p12.p12"), "--password-file", pw)
	if code != exitOK || !strings.Contains(out, "p12@example.com") || !strings.Contains(errOut, "warning:") {
		t.Errorf("import .p12: exit %d\nstdout %s\nstderr %s\nwant the identity and a warning about who made the key", code, out, errOut)
	}
}

// TestMessages signs and encrypts with the CLI and checks the results with
// openssl, then verifies, decrypts and harvests with the CLI.
func TestMessages(t *testing.T) {
	c := newCLI(t)
	ca := testpki.NewCA(t, "Message CA")
	alice := ca.Issue(t, "alice@example.com", nil)
	bob := ca.Issue(t, "bob@example.org", nil)
	caFile := testpki.WriteFile(t, c.dir, "ca.pem", testpki.CertPEM(ca.Cert))
	for name, id := range map[string]*testpki.Identity{"alice": alice, "bob": bob} {
		certFile, keyFile, _ := testpki.WriteIdentity(t, c.dir, name, id)
		pw := testpki.WriteFile(t, c.dir, name+".pw", []byte("pw"))
		openssl(t, "pkcs12", "-export", "-in", certFile, "-inkey", keyFile, "-passout", "file:"+pw, "-out", c.path(name+".p12"))
		c.ok("import", c.keystore(), c.path(name+".p12"), "--password-file", pw)
	}
	c.ok("trust", "add", c.keystore(), caFile)
	c.ok("certs", "import", c.keystore(), c.path("bob.crt"))

	msg := "From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\nSubject: hi\r\n\r\nHello Bob, caf\xc3\xa9.\r\n"
	c.stdin = []byte(msg)
	signed := c.ok("message", "sign", c.keystore())
	signedFile := testpki.WriteFile(t, c.dir, "signed.eml", []byte(signed))
	if got := openssl(t, "cms", "-verify", "-in", signedFile, "-CAfile", caFile); !strings.Contains(got, "Hello Bob") {
		t.Errorf("openssl cms -verify of our signed message printed %q", got)
	}

	c.stdin = []byte(signed)
	if out := c.ok("message", "verify", c.keystore(), "--harvest"); !strings.Contains(out, "valid") || !strings.Contains(out, "Harvested the certificate of alice@example.com") {
		t.Errorf("message verify --harvest = %q", out)
	}
	tampered := strings.Replace(signed, "Hello Bob", "Hello Eve", 1)
	c.stdin = []byte(tampered)
	if code, _, errOut := c.run("message", "verify", c.keystore()); code != exitFailure || !strings.Contains(errOut, "invalid") {
		t.Errorf("message verify of a tampered message: exit %d, %q; want 1 and invalid", code, errOut)
	}

	c.stdin = []byte(msg)
	encrypted := c.ok("message", "encrypt", c.keystore())
	encFile := testpki.WriteFile(t, c.dir, "enc.eml", []byte(encrypted))
	for _, who := range []string{"bob", "alice"} {
		got := openssl(t, "cms", "-decrypt", "-in", encFile, "-recip", c.path(who+".crt"), "-inkey", c.path(who+".key"))
		if !strings.Contains(got, "application/pkcs7-signature") {
			t.Errorf("openssl cms -decrypt as %s: %q, want the signed message inside", who, got)
		}
	}

	c.stdin = []byte(encrypted)
	code, out, errOut := c.run("message", "decrypt", c.keystore(), "--identity", "bob@example.org")
	if code != exitOK || !strings.Contains(out, "Hello Bob") || !strings.Contains(out, "Authentication-Results:") || !strings.Contains(errOut, "signature: valid") {
		t.Errorf("message decrypt: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}

	c.stdin = []byte("From: alice@example.com\r\nTo: carol@example.net\r\n\r\nhi\r\n")
	if code, _, errOut := c.run("message", "encrypt", c.keystore()); code != exitFailure || !strings.Contains(errOut, "carol@example.net") {
		t.Errorf("encrypt to a recipient without a certificate: exit %d, %q; want 1 naming carol", code, errOut)
	}

	if out := c.ok("certs", "list", c.keystore()); !strings.Contains(out, "bob@example.org") || !strings.Contains(out, "yes (chosen)") {
		t.Errorf("certs list = %q", out)
	}
	if out := c.ok("certs", "export", c.keystore(), "bob@example.org"); !strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Errorf("certs export = %q", out)
	}
	c.ok("certs", "remove", c.keystore(), "bob@example.org")
	if code, _, _ := c.run("certs", "show", c.keystore(), "bob@example.org"); code != exitFailure {
		t.Errorf("certs show after remove: exit %d, want 1", code)
	}
}

// TestDecryptNamesCipher: a message in a cipher we do not decrypt is named
// for what it is, not for the default cipher. OpenSSL makes the messages.
func TestDecryptNamesCipher(t *testing.T) {
	c := newCLI(t)
	ca := testpki.NewCA(t, "Cipher CA")
	certFile, keyFile, _ := testpki.WriteIdentity(t, c.dir, "rc2", ca.Issue(t, "rc2@example.com", nil))
	pw := testpki.WriteFile(t, c.dir, "pw.txt", []byte("pw"))
	openssl(t, "pkcs12", "-export", "-in", certFile, "-inkey", keyFile, "-passout", "file:"+pw, "-out", c.path("rc2.p12"))
	c.ok("import", c.keystore(), c.path("rc2.p12"), "--password-file", pw)
	content := testpki.WriteFile(t, c.dir, "content.txt", []byte("Content-Type: text/plain\r\n\r\nold mail\r\n"))
	for cipher, want := range map[string]string{
		"rc2-40-cbc":   "encrypted (rc2-40-cbc, not supported, 1 recipient(s)): not decrypted: smime: decrypt: cms: unsupported content cipher rc2-40-cbc (1.2.840.113549.3.2)",
		"des-cbc":      "encrypted (des-cbc, not supported, 1 recipient(s)): not decrypted: smime: decrypt: cms: unsupported content cipher des-cbc (1.3.14.3.2.7)",
		"des-ede3-cbc": "encrypted (des-ede3-cbc, 1 recipient(s)): decrypted",
	} {
		out := c.path(cipher + ".p7m")
		openssl(t, "cms", "-encrypt", "-provider", "legacy", "-provider", "default", "-"+cipher, "-binary",
			"-in", content, "-outform", "DER", "-out", out, certFile)
		c.stdin = []byte("From: rc2@example.com\r\nTo: rc2@example.com\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			base64.StdEncoding.EncodeToString(must(os.ReadFile(out))) + "\r\n")
		_, _, errOut := c.run("message", "decrypt", c.keystore(), "--identity", "rc2@example.com")
		if !strings.Contains(errOut, want) {
			t.Errorf("message decrypt of %s said %q, want %q", cipher, errOut, want)
		}
	}
}

// TestPanicText: a panic is reported by its type, never its value, which
// may carry a secret; a runtime error's own text is kept.
func TestPanicText(t *testing.T) {
	if got := panicText(errors.New("key bytes 0badc0de")); strings.Contains(got, "0badc0de") || !strings.Contains(got, "*errors.errorString") {
		t.Errorf("panicText(error) = %q, want the type without the value", got)
	}
	var rerr error
	func() {
		defer func() { rerr = recover().(error) }()
		_ = []int{}[len(os.Args)+2]
	}()
	if got := panicText(rerr); !strings.Contains(got, "index out of range") {
		t.Errorf("panicText(runtime error) = %q, want the runtime's text", got)
	}
}

// TestHostileMessages: a multipart/signed with no part at all (only its close
// delimiter) is reported as a malformed signature by message verify and as
// not encrypted by message decrypt, where both used to crash (issue 9).
func TestHostileMessages(t *testing.T) {
	c := newCLI(t)
	c.ok("csr", c.keystore(), "--email", "bob@example.org", "--out", c.path("bob.csr"))
	for _, lf := range []string{"\r\n", "\n"} {
		msg := strings.ReplaceAll("From: mallory@example.net\r\nSubject: empty\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"abc\"\r\n\r\n--abc--\r\n", "\r\n", lf)
		c.stdin = []byte(msg)
		if code, _, errOut := c.run("message", "verify", c.keystore()); code != exitFailure || !strings.Contains(errOut, "signature: error") || !strings.Contains(errOut, "malformed multipart/signed") {
			t.Errorf("message verify: exit %d, %q; want 1 and a malformed signature", code, errOut)
		}
		c.stdin = []byte(msg)
		if code, _, errOut := c.run("message", "decrypt", c.keystore()); code != exitFailure || !strings.Contains(errOut, "not encrypted") {
			t.Errorf("message decrypt: exit %d, %q; want 1 and not encrypted", code, errOut)
		}
	}
}
