package cms_test

import (
	"bytes"
	"crypto/x509"
	"os/exec"
	"strings"
	"testing"

	"smimeproxy/cms"
	"smimeproxy/internal/testpki"
	"smimeproxy/internal/testutil"
)

// peer runs openssl in a scratch directory that holds the test PKI as PEM.
type peer struct {
	t       *testing.T
	openssl string
	dir     string
	ca      string
	msg     string
}

type files struct{ cert, key string }

func newPeer(t *testing.T) *peer {
	t.Helper()
	bin := testutil.NeedTool(t, "openssl")
	p := fixtures(t)
	dir := t.TempDir()
	return &peer{
		t: t, openssl: bin, dir: dir,
		ca:  testpki.WriteFile(t, dir, "ca.pem", testpki.CertPEM(p.ca.Cert)),
		msg: testpki.WriteFile(t, dir, "msg.txt", message),
	}
}

func (o *peer) identity(name string, id *testpki.Identity) files {
	cert, key, _ := testpki.WriteIdentity(o.t, o.dir, name, id)
	return files{cert, key}
}

func (o *peer) write(name string, data []byte) string {
	return testpki.WriteFile(o.t, o.dir, name, data)
}

// run runs openssl and returns its standard output; it fails the test when
// openssl fails.
func (o *peer) run(args ...string) []byte {
	o.t.Helper()
	out, err := o.try(args...)
	if err != nil {
		o.t.Fatalf("openssl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (o *peer) try(args ...string) ([]byte, error) {
	cmd := exec.Command(o.openssl, args...)
	cmd.Dir = o.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, &peerError{err: err, stderr: stderr.String()}
	}
	return stdout.Bytes(), nil
}

type peerError struct {
	err    error
	stderr string
}

func (e *peerError) Error() string { return e.err.Error() + ": " + e.stderr }

// Ed25519 signatures and X25519 recipients are left out of the openssl
// cases: OpenSSL 3.0 handles neither in CMS ("eddsa invalid digest", "no
// matching recipient"). interop_test.go checks both against RFC 9216's samples.

func TestOpenSSLVerifiesOurSignatures(t *testing.T) {
	o := newPeer(t)
	p := fixtures(t)
	tests := []struct {
		name string
		id   *testpki.Identity
		opts cms.SignOptions
	}{
		{"rsa", p.rsa, cms.SignOptions{}},
		{"rsa detached", p.rsa, cms.SignOptions{Detached: true}},
		{"rsa sha512", p.rsa, cms.SignOptions{Hash: 7}},
		{"rsa pss", p.rsa, cms.SignOptions{PSS: true}},
		{"rsa pss sha384 detached", p.rsa, cms.SignOptions{PSS: true, Hash: 6, Detached: true}},
		{"p256 detached", p.p256, cms.SignOptions{Detached: true}},
		{"p384 sha384", p.p384, cms.SignOptions{Hash: 6}},
		{"p521 sha512 detached", p.p521, cms.SignOptions{Hash: 7, Detached: true}},
		{"key preference", p.rsa, cms.SignOptions{EncryptionKeyPreference: p.rsa2.Cert, Certificates: []*x509.Certificate{p.rsa2.Cert}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			der, err := cms.Sign(message, tc.id.Cert, tc.id.Key, &tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			in := o.write(safe(tc.name)+".p7s", der)
			args := []string{"cms", "-verify", "-inform", "DER", "-in", in, "-CAfile", o.ca, "-binary"}
			if tc.opts.Detached {
				args = append(args, "-content", o.msg)
			}
			if got := o.run(args...); !bytes.Equal(got, message) {
				t.Errorf("openssl verified content %q, want %q", got, message)
			}
		})
	}
}

func TestVerifyOpenSSLSignatures(t *testing.T) {
	o := newPeer(t)
	p := fixtures(t)
	rsa := o.identity("rsa", p.rsa)
	p256 := o.identity("p256", p.p256)
	tests := []struct {
		name  string
		id    files
		cert  *x509.Certificate
		extra []string
		want  x509.SignatureAlgorithm
	}{
		{"rsa sha256 detached", rsa, p.rsa.Cert, []string{"-md", "sha256"}, x509.SHA256WithRSA},
		{"rsa sha384 attached", rsa, p.rsa.Cert, []string{"-md", "sha384", "-nodetach"}, x509.SHA384WithRSA},
		{"rsa sha512 detached", rsa, p.rsa.Cert, []string{"-md", "sha512"}, x509.SHA512WithRSA},
		{"rsa sha1 attached", rsa, p.rsa.Cert, []string{"-md", "sha1", "-nodetach"}, x509.SHA1WithRSA},
		{"rsa pss", rsa, p.rsa.Cert, []string{"-md", "sha256", "-keyopt", "rsa_padding_mode:pss"}, x509.SHA256WithRSAPSS},
		{"rsa pss sha512 attached", rsa, p.rsa.Cert, []string{"-md", "sha512", "-nodetach", "-keyopt", "rsa_padding_mode:pss"}, x509.SHA512WithRSAPSS},
		{"p256 sha256", p256, p.p256.Cert, []string{"-md", "sha256"}, x509.ECDSAWithSHA256},
		{"p256 sha384 attached", p256, p.p256.Cert, []string{"-md", "sha384", "-nodetach"}, x509.ECDSAWithSHA384},
		{"rsa no attributes", rsa, p.rsa.Cert, []string{"-md", "sha256", "-noattr", "-nodetach"}, x509.SHA256WithRSA},
		{"rsa ski indefinite", rsa, p.rsa.Cert, []string{"-md", "sha256", "-keyid", "-stream", "-indef", "-nodetach"}, x509.SHA256WithRSA},
		{"p256 indefinite", p256, p.p256.Cert, []string{"-md", "sha256", "-stream", "-nodetach"}, x509.ECDSAWithSHA256},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"cms", "-sign", "-binary", "-in", o.msg, "-signer", tc.id.cert, "-inkey", tc.id.key, "-outform", "DER"}
			der := o.run(append(args, tc.extra...)...)
			checkIndefinite(t, tc.name, der)
			sd, err := cms.ParseSignedData(der)
			if err != nil {
				t.Fatalf("ParseSignedData: %v", err)
			}
			if len(sd.Signers) != 1 {
				t.Fatalf("got %d signers, want 1", len(sd.Signers))
			}
			s := sd.Signers[0]
			if s.SignatureAlgorithm != tc.want {
				t.Errorf("SignatureAlgorithm = %v, want %v", s.SignatureAlgorithm, tc.want)
			}
			cert := sd.FindCertificate(s, nil)
			if cert == nil || !cert.Equal(tc.cert) {
				t.Fatalf("FindCertificate = %v, want the signer", cert)
			}
			detached := !strings.Contains(strings.Join(tc.extra, " "), "-nodetach")
			if detached != (sd.Content == nil) {
				t.Errorf("Content = %q, detached %v", sd.Content, detached)
			}
			var content []byte
			if detached {
				content = message
			}
			if err := sd.Verify(s, cert, content); err != nil {
				t.Errorf("Verify: %v", err)
			}
			if err := sd.Verify(s, cert, []byte("something else")); err == nil {
				t.Error("Verify(other content) succeeded")
			}
		})
	}
}

func TestOpenSSLDecryptsOurs(t *testing.T) {
	o := newPeer(t)
	p := fixtures(t)
	keys := []struct {
		name string
		id   *testpki.Identity
		opts cms.EncryptOptions
	}{
		{"rsa", p.rsa, cms.EncryptOptions{}},
		{"rsa oaep", p.rsa, cms.EncryptOptions{OAEP: true}},
		{"rsa ski", p.rsa, cms.EncryptOptions{SubjectKeyID: true}},
		{"p256", p.p256, cms.EncryptOptions{}},
		{"p384 ski", p.p384, cms.EncryptOptions{SubjectKeyID: true}},
		{"p521", p.p521, cms.EncryptOptions{}},
	}
	for _, k := range keys {
		f := o.identity(safe(k.name), k.id)
		for _, c := range ciphers {
			t.Run(k.name+" "+c.String(), func(t *testing.T) {
				opts := k.opts
				opts.Cipher = c
				der, err := cms.Encrypt(message, []*x509.Certificate{p.rsa2.Cert, k.id.Cert}, &opts)
				if err != nil {
					t.Fatal(err)
				}
				in := o.write(safe(k.name+c.String())+".p7m", der)
				got := o.run("cms", "-decrypt", "-inform", "DER", "-in", in, "-recip", f.cert, "-inkey", f.key, "-binary")
				if !bytes.Equal(got, message) {
					t.Errorf("openssl decrypted %q, want %q", got, message)
				}
			})
		}
	}
}

func TestDecryptOpenSSLs(t *testing.T) {
	o := newPeer(t)
	p := fixtures(t)
	rsa := o.identity("rsa", p.rsa)
	p256 := o.identity("p256", p.p256)
	p384 := o.identity("p384", p.p384)
	tests := []struct {
		name string
		id   *testpki.Identity
		f    files
		args []string // after -encrypt
		want cms.Cipher
	}{
		{"rsa aes128", p.rsa, rsa, []string{"-aes128", rsa.cert}, cms.AES128CBC},
		{"rsa aes192", p.rsa, rsa, []string{"-aes192", rsa.cert}, cms.AES192CBC},
		{"rsa aes256", p.rsa, rsa, []string{"-aes256", rsa.cert}, cms.AES256CBC},
		{"rsa des3", p.rsa, rsa, []string{"-des3", rsa.cert}, cms.DES3CBC},
		{"rsa aes128 gcm", p.rsa, rsa, []string{"-aes-128-gcm", rsa.cert}, cms.AES128GCM},
		{"rsa aes256 gcm", p.rsa, rsa, []string{"-aes-256-gcm", rsa.cert}, cms.AES256GCM},
		{"rsa oaep sha1", p.rsa, rsa, []string{"-aes256", "-recip", rsa.cert, "-keyopt", "rsa_padding_mode:oaep"}, cms.AES256CBC},
		{"rsa oaep sha256", p.rsa, rsa, []string{"-aes256", "-recip", rsa.cert, "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"}, cms.AES256CBC},
		{"rsa oaep sha384 mgf1 sha1 label", p.rsa, rsa, []string{"-aes-256-gcm", "-recip", rsa.cert, "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha384", "-keyopt", "rsa_mgf1_md:sha1", "-keyopt", "rsa_oaep_label:0011"}, cms.AES256GCM},
		{"rsa keyid", p.rsa, rsa, []string{"-aes256", "-keyid", rsa.cert}, cms.AES256CBC},
		{"rsa indefinite", p.rsa, rsa, []string{"-aes256", "-stream", "-indef", rsa.cert}, cms.AES256CBC},
		{"rsa gcm indefinite", p.rsa, rsa, []string{"-aes-128-gcm", "-stream", "-indef", rsa.cert}, cms.AES128GCM},
		{"p256 aes128", p.p256, p256, []string{"-aes128", p256.cert}, cms.AES128CBC},
		{"p256 aes256 gcm", p.p256, p256, []string{"-aes-256-gcm", p256.cert}, cms.AES256GCM},
		{"p384 aes256 keyid", p.p384, p384, []string{"-aes256", "-keyid", p384.cert}, cms.AES256CBC},
		{"p384 sha512 kdf", p.p384, p384, []string{"-aes192", "-recip", p384.cert, "-keyopt", "ecdh_kdf_md:sha512"}, cms.AES192CBC},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"cms", "-encrypt", "-binary", "-in", o.msg, "-outform", "DER"}, tc.args...)
			der := o.run(args...)
			checkIndefinite(t, tc.name, der)
			env, err := cms.ParseEnvelope(der)
			if err != nil {
				t.Fatalf("ParseEnvelope: %v", err)
			}
			if !env.CipherKnown || env.Cipher != tc.want || env.Authenticated != tc.want.AEAD() {
				t.Errorf("cipher %v (known %v, authenticated %v), want %v", env.Cipher, env.CipherKnown, env.Authenticated, tc.want)
			}
			got, err := env.Decrypt(tc.id.Cert, tc.id.Key)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(got, message) {
				t.Errorf("Decrypt = %q, want %q", got, message)
			}
		})
	}
}

// TestOpenSSLReadsOurCapabilities checks the attributes as openssl prints
// them: it must see SMIMECapabilities and the key preference.
func TestOpenSSLReadsOurCapabilities(t *testing.T) {
	o := newPeer(t)
	p := fixtures(t)
	der, err := cms.Sign(message, p.rsa.Cert, p.rsa.Key, &cms.SignOptions{EncryptionKeyPreference: p.rsa2.Cert})
	if err != nil {
		t.Fatal(err)
	}
	out := string(o.run("cms", "-cmsout", "-print", "-inform", "DER", "-in", o.write("caps.p7s", der)))
	for _, want := range []string{"S/MIME Capabilities", "aes-256-gcm", "rsaesOaep", "1.2.840.113549.1.9.16.2.11", "signingTime"} {
		if !strings.Contains(out, want) {
			t.Errorf("openssl -print output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
}

// checkIndefinite makes sure that the cases named "indefinite" do test BER.
func checkIndefinite(t *testing.T, name string, der []byte) {
	t.Helper()
	if strings.Contains(name, "indefinite") && (len(der) < 2 || der[1] != 0x80) {
		t.Fatalf("openssl wrote a definite length; the BER case tests nothing")
	}
}

func safe(name string) string { return strings.NewReplacer(" ", "_", "/", "_").Replace(name) }
