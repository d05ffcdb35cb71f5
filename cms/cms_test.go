package cms_test

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"smimeproxy/cms"
	"smimeproxy/internal/hostile"
	"smimeproxy/internal/testpki"
)

// pki holds identities shared by the tests: keys are slow to make.
type pki struct {
	ca                    *testpki.CA
	rsa, rsa2, p256, p384 *testpki.Identity
	p521, ed25519         *testpki.Identity
}

var (
	pkiOnce sync.Once
	shared  *pki
)

func fixtures(t testing.TB) *pki {
	t.Helper()
	pkiOnce.Do(func() {
		ca := testpki.NewCA(t, "cms test CA")
		_, edKey, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		ed := ca.Issue(t, "carlos@example.com", &testpki.Options{PublicKey: edKey.Public()})
		ed.Key = edKey
		shared = &pki{
			ca:      ca,
			rsa:     ca.Issue(t, "alice@example.com", nil),
			rsa2:    ca.Issue(t, "bob@example.com", nil),
			p256:    ca.Issue(t, "p256@example.com", &testpki.Options{Key: "p256"}),
			p384:    ca.Issue(t, "p384@example.com", &testpki.Options{Key: "p384"}),
			p521:    ca.Issue(t, "p521@example.com", &testpki.Options{Key: "p521"}),
			ed25519: ed,
		}
	})
	if shared == nil {
		t.Fatal("test PKI could not be made")
	}
	return shared
}

var message = []byte("Content-Type: text/plain\r\n\r\nHello, S/MIME.\r\n")

func TestSignVerify(t *testing.T) {
	p := fixtures(t)
	tests := []struct {
		name string
		id   *testpki.Identity
		opts cms.SignOptions
		alg  x509.SignatureAlgorithm
		hash crypto.Hash
	}{
		{"rsa", p.rsa, cms.SignOptions{}, x509.SHA256WithRSA, crypto.SHA256},
		{"rsa detached sha384", p.rsa, cms.SignOptions{Detached: true, Hash: crypto.SHA384}, x509.SHA384WithRSA, crypto.SHA384},
		{"rsa sha512", p.rsa, cms.SignOptions{Hash: crypto.SHA512}, x509.SHA512WithRSA, crypto.SHA512},
		{"rsa pss", p.rsa, cms.SignOptions{PSS: true}, x509.SHA256WithRSAPSS, crypto.SHA256},
		{"rsa pss sha512 detached", p.rsa, cms.SignOptions{PSS: true, Hash: crypto.SHA512, Detached: true}, x509.SHA512WithRSAPSS, crypto.SHA512},
		{"p256", p.p256, cms.SignOptions{}, x509.ECDSAWithSHA256, crypto.SHA256},
		{"p384 sha384 detached", p.p384, cms.SignOptions{Hash: crypto.SHA384, Detached: true}, x509.ECDSAWithSHA384, crypto.SHA384},
		{"p521 sha512", p.p521, cms.SignOptions{Hash: crypto.SHA512}, x509.ECDSAWithSHA512, crypto.SHA512},
		{"ed25519", p.ed25519, cms.SignOptions{}, x509.PureEd25519, crypto.SHA512},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.Certificates = []*x509.Certificate{p.ca.Cert, tc.id.Cert}
			der, err := cms.Sign(message, tc.id.Cert, tc.id.Key, &opts)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if typ, err := cms.Identify(der); err != nil || typ != cms.TypeSignedData {
				t.Errorf("Identify = %v, %v, want TypeSignedData", typ, err)
			}
			sd, err := cms.ParseSignedData(der)
			if err != nil {
				t.Fatalf("ParseSignedData: %v", err)
			}
			if len(sd.Signers) != 1 {
				t.Fatalf("got %d signers, want 1", len(sd.Signers))
			}
			if len(sd.Certificates) != 2 {
				t.Errorf("got %d certificates, want 2 (deduplicated)", len(sd.Certificates))
			}
			if tc.opts.Detached != (sd.Content == nil) {
				t.Errorf("Detached=%v but Content=%q", tc.opts.Detached, sd.Content)
			}
			s := sd.Signers[0]
			if s.SignatureAlgorithm != tc.alg || s.Hash != tc.hash {
				t.Errorf("signer algorithm = %v/%v, want %v/%v", s.SignatureAlgorithm, s.Hash, tc.alg, tc.hash)
			}
			if time.Since(s.SigningTime) > time.Minute {
				t.Errorf("SigningTime = %v, want about now", s.SigningTime)
			}
			if len(s.Capabilities) != len(cms.DefaultCapabilities()) {
				t.Errorf("got %d capabilities, want the defaults", len(s.Capabilities))
			}
			cert := sd.FindCertificate(s, nil)
			if cert == nil || !cert.Equal(tc.id.Cert) {
				t.Fatalf("FindCertificate = %v, want the signer", cert)
			}
			var content []byte
			if tc.opts.Detached {
				content = message
			}
			if err := sd.Verify(s, cert, content); err != nil {
				t.Errorf("Verify: %v", err)
			}
			tampered := bytes.Clone(message)
			tampered[len(tampered)-3] ^= 1
			if err := sd.Verify(s, cert, tampered); !errors.Is(err, cms.ErrSignature) {
				t.Errorf("Verify(tampered) = %v, want ErrSignature", err)
			}
			if err := sd.Verify(s, p.rsa2.Cert, content); !errors.Is(err, cms.ErrSignature) {
				t.Errorf("Verify(other certificate) = %v, want ErrSignature", err)
			}
		})
	}
}

// TestSignTamperedEncoding flips each byte of the signature's DER in turn:
// every result must fail to parse, or fail to verify, and never panic.
func TestSignTamperedEncoding(t *testing.T) {
	p := fixtures(t)
	der, err := cms.Sign(message, p.p256.Cert, p.p256.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range der {
		bad := bytes.Clone(der)
		bad[i] ^= 0x01
		sd, err := cms.ParseSignedData(bad)
		if err != nil || len(sd.Signers) != 1 {
			continue
		}
		cert := sd.FindCertificate(sd.Signers[0], []*x509.Certificate{p.p256.Cert})
		if cert == nil {
			continue
		}
		if err := sd.Verify(sd.Signers[0], cert, nil); err == nil && !bytes.Equal(sd.Content, message) {
			t.Errorf("byte %d flipped: verified with content %q", i, sd.Content)
		}
	}
}

func TestSignAttributes(t *testing.T) {
	p := fixtures(t)
	when := time.Date(2051, 3, 4, 5, 6, 7, 0, time.UTC) // GeneralizedTime from 2050 on
	caps := []cms.Capability{{Algorithm: []int{2, 16, 840, 1, 101, 3, 4, 1, 2}}}
	der, err := cms.Sign(message, p.rsa.Cert, p.rsa.Key, &cms.SignOptions{
		SigningTime: when, Capabilities: caps, EncryptionKeyPreference: p.rsa2.Cert,
	})
	if err != nil {
		t.Fatal(err)
	}
	sd, err := cms.ParseSignedData(der)
	if err != nil {
		t.Fatal(err)
	}
	s := sd.Signers[0]
	if !s.SigningTime.Equal(when) {
		t.Errorf("SigningTime = %v, want %v", s.SigningTime, when)
	}
	if len(s.Capabilities) != 1 || !s.Capabilities[0].Algorithm.Equal(caps[0].Algorithm) {
		t.Errorf("Capabilities = %v, want %v", s.Capabilities, caps)
	}
	if c, ok := s.Capabilities[0].Cipher(); !ok || c != cms.AES128CBC {
		t.Errorf("Capability.Cipher() = %v, %v, want aes-128-cbc", c, ok)
	}
	if s.EncryptionKeyPreference == nil || !s.EncryptionKeyPreference.Matches(p.rsa2.Cert) {
		t.Errorf("EncryptionKeyPreference = %v, want Bob's certificate", s.EncryptionKeyPreference)
	}
	if s.ID.String() == "" || !s.ID.Matches(p.rsa.Cert) || s.ID.Matches(p.rsa2.Cert) {
		t.Errorf("signer ID %v does not name exactly the signer", s.ID)
	}
	if err := sd.Verify(s, p.rsa.Cert, nil); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

// replaceOnce replaces the first occurrence of old in der, which must be there.
func replaceOnce(t *testing.T, der, old, new []byte) []byte {
	t.Helper()
	if !bytes.Contains(der, old) {
		t.Fatalf("% x not found", old)
	}
	return bytes.Replace(bytes.Clone(der), old, new, 1)
}

func TestVerifyRejects(t *testing.T) {
	p := fixtures(t)
	der, err := cms.Sign(message, p.p256.Cert, p.p256.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	var (
		oidData           = []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01}
		oidDigestedData   = []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x05}
		oidECDSAWithSHA   = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
		oidECDSAWithOther = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x09}
		oidSHA256         = []byte{0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01}
		oidOtherDigest    = []byte{0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x09}
	)
	verify := func(der []byte) error {
		sd, err := cms.ParseSignedData(der)
		if err != nil {
			t.Fatalf("ParseSignedData: %v", err)
		}
		return sd.Verify(sd.Signers[0], p.p256.Cert, nil)
	}
	// The first id-data is the eContentType; the contentType attribute
	// still says id-data.
	if err := verify(replaceOnce(t, der, oidData, oidDigestedData)); !errors.Is(err, cms.ErrSignature) {
		t.Errorf("Verify(eContentType changed) = %v, want ErrSignature", err)
	}
	var unsupported *cms.UnsupportedError
	if err := verify(replaceOnce(t, der, oidECDSAWithSHA, oidECDSAWithOther)); !errors.As(err, &unsupported) {
		t.Errorf("Verify(unknown signature algorithm) = %v, want UnsupportedError", err)
	}
	if err := verify(bytes.ReplaceAll(der, oidSHA256, oidOtherDigest)); !errors.As(err, &unsupported) {
		t.Errorf("Verify(unknown digest) = %v, want UnsupportedError", err)
	}
}

func TestParseSkipsUnreadableCertificates(t *testing.T) {
	p := fixtures(t)
	junk := &x509.Certificate{Raw: []byte{0x30, 0x03, 0x02, 0x01, 0x01}}
	der, err := cms.Sign(message, p.rsa.Cert, p.rsa.Key, &cms.SignOptions{Certificates: []*x509.Certificate{junk, p.ca.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	sd, err := cms.ParseSignedData(der)
	if err != nil {
		t.Fatalf("ParseSignedData: %v", err)
	}
	if len(sd.Certificates) != 2 {
		t.Errorf("got %d certificates, want the 2 readable ones", len(sd.Certificates))
	}
	if err := sd.Verify(sd.Signers[0], sd.FindCertificate(sd.Signers[0], nil), nil); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestSignErrors(t *testing.T) {
	p := fixtures(t)
	if _, err := cms.Sign(message, p.rsa.Cert, p.p256.Key, nil); err == nil {
		t.Error("Sign with a key that is not the certificate's succeeded")
	}
	if _, err := cms.Sign(message, p.rsa.Cert, p.rsa.Key, &cms.SignOptions{Hash: crypto.SHA1}); err == nil {
		t.Error("Sign with SHA-1 succeeded")
	}
}

func TestDefaultCapabilities(t *testing.T) {
	var got []cms.Cipher
	for _, c := range cms.DefaultCapabilities() {
		if ci, ok := c.Cipher(); ok {
			got = append(got, ci)
		}
	}
	want := []cms.Cipher{cms.AES256GCM, cms.AES128GCM, cms.AES256CBC, cms.AES192CBC, cms.AES128CBC}
	if !slices.Equal(got, want) {
		t.Errorf("DefaultCapabilities ciphers = %v, want %v", got, want)
	}
	names := map[cms.Cipher]string{
		cms.AES256CBC: "aes-256-cbc", cms.AES128CBC: "aes-128-cbc", cms.AES192CBC: "aes-192-cbc",
		cms.AES128GCM: "aes-128-gcm", cms.AES256GCM: "aes-256-gcm", cms.DES3CBC: "des-ede3-cbc",
	}
	for c, want := range names {
		if got := c.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", c, got, want)
		}
	}
}

var ciphers = []cms.Cipher{cms.AES256CBC, cms.AES128CBC, cms.AES192CBC, cms.AES128GCM, cms.AES256GCM}

func TestEncryptDecrypt(t *testing.T) {
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
		{"p384", p.p384, cms.EncryptOptions{}},
		{"p521 ski", p.p521, cms.EncryptOptions{SubjectKeyID: true}},
	}
	for _, k := range keys {
		for _, c := range ciphers {
			t.Run(k.name+" "+c.String(), func(t *testing.T) {
				opts := k.opts
				opts.Cipher = c
				der, err := cms.Encrypt(message, []*x509.Certificate{p.rsa2.Cert, k.id.Cert}, &opts)
				if err != nil {
					t.Fatalf("Encrypt: %v", err)
				}
				wantType := cms.TypeEnvelopedData
				if c.AEAD() {
					wantType = cms.TypeAuthEnvelopedData
				}
				if typ, err := cms.Identify(der); err != nil || typ != wantType {
					t.Errorf("Identify = %v, %v, want %v", typ, err, wantType)
				}
				env, err := cms.ParseEnvelope(der)
				if err != nil {
					t.Fatalf("ParseEnvelope: %v", err)
				}
				if !env.CipherKnown || env.Cipher != c || env.Authenticated != c.AEAD() {
					t.Errorf("envelope cipher = %v (known %v, authenticated %v), want %v", env.Cipher, env.CipherKnown, env.Authenticated, c)
				}
				if len(env.Recipients) != 2 {
					t.Fatalf("got %d recipients, want 2", len(env.Recipients))
				}
				got, err := env.Decrypt(k.id.Cert, k.id.Key)
				if err != nil {
					t.Fatalf("Decrypt: %v", err)
				}
				if !bytes.Equal(got, message) {
					t.Errorf("Decrypt = %q, want %q", got, message)
				}
				if _, err := env.Decrypt(p.rsa2.Cert, p.rsa2.Key); err != nil {
					t.Errorf("Decrypt for the other recipient: %v", err)
				}
				if _, err := env.Decrypt(p.p384.Cert, p.p384.Key); k.id != p.p384 && !errors.Is(err, cms.ErrNoRecipient) {
					t.Errorf("Decrypt for a stranger = %v, want ErrNoRecipient", err)
				}
			})
		}
	}
}

func TestEncryptECDHKeyForms(t *testing.T) {
	p := fixtures(t)
	der, err := cms.Encrypt(message, []*x509.Certificate{p.p256.Cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	env, err := cms.ParseEnvelope(der)
	if err != nil {
		t.Fatal(err)
	}
	ecdhKey, err := p.p256.Key.(*ecdsa.PrivateKey).ECDH()
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.PrivateKey{"ecdsa": p.p256.Key, "ecdh": ecdhKey, "KeyExchanger": ecdh.KeyExchanger(ecdhKey)} {
		if got, err := env.Decrypt(p.p256.Cert, key); err != nil || !bytes.Equal(got, message) {
			t.Errorf("Decrypt with %s key = %q, %v", name, got, err)
		}
	}
}

func TestDecryptTampered(t *testing.T) {
	p := fixtures(t)
	for _, c := range ciphers {
		for _, id := range []*testpki.Identity{p.rsa, p.p256} {
			der, err := cms.Encrypt(message, []*x509.Certificate{id.Cert}, &cms.EncryptOptions{Cipher: c})
			if err != nil {
				t.Fatal(err)
			}
			// The content comes last, then for GCM the 16-byte tag (after
			// its 2-byte header). In CBC, flipping the last byte of the
			// next-to-last block flips the last padding byte.
			flips := []int{17}
			if c.AEAD() {
				flips = []int{1, 19}
			}
			for _, back := range flips {
				bad := bytes.Clone(der)
				bad[len(bad)-back] ^= 0x80
				env, err := cms.ParseEnvelope(bad)
				if err != nil {
					t.Fatalf("%v: ParseEnvelope: %v", c, err)
				}
				if got, err := env.Decrypt(id.Cert, id.Key); !errors.Is(err, cms.ErrDecrypt) {
					t.Errorf("%v %s: byte -%d flipped: Decrypt = %q, %v, want ErrDecrypt", c, id.Cert.Subject.CommonName, back, got, err)
				}
			}
		}
	}
}

func TestDecryptWrongKey(t *testing.T) {
	p := fixtures(t)
	der, err := cms.Encrypt(message, []*x509.Certificate{p.rsa.Cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	env, err := cms.ParseEnvelope(der)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Decrypt(p.rsa2.Cert, p.rsa2.Key); !errors.Is(err, cms.ErrNoRecipient) {
		t.Errorf("Decrypt(other recipient) = %v, want ErrNoRecipient", err)
	}
	// The right certificate with the wrong key: PKCS #1 v1.5 must fail
	// late, as a content decryption failure.
	if _, err := env.Decrypt(p.rsa.Cert, p.rsa2.Key); !errors.Is(err, cms.ErrDecrypt) {
		t.Errorf("Decrypt(wrong key) = %v, want ErrDecrypt", err)
	}
	if _, err := env.DecryptKEK([]byte{1}, make([]byte, 16)); !errors.Is(err, cms.ErrNoRecipient) {
		t.Errorf("DecryptKEK = %v, want ErrNoRecipient", err)
	}
}

func TestEncryptErrors(t *testing.T) {
	p := fixtures(t)
	_, err := cms.Encrypt(message, []*x509.Certificate{p.rsa.Cert, p.ed25519.Cert}, nil)
	var unsupported *cms.UnsupportedError
	if !errors.As(err, &unsupported) || !bytes.Contains([]byte(err.Error()), []byte("carlos@example.com")) {
		t.Errorf("Encrypt to an Ed25519 certificate = %v, want an UnsupportedError naming it", err)
	}
	if _, err := cms.Encrypt(message, []*x509.Certificate{p.rsa.Cert}, &cms.EncryptOptions{Cipher: cms.DES3CBC}); err == nil {
		t.Error("Encrypt with 3DES succeeded")
	}
	if _, err := cms.Encrypt(message, nil, nil); err == nil {
		t.Error("Encrypt to nobody succeeded")
	}
}

func TestCertID(t *testing.T) {
	p := fixtures(t)
	byIssuer := cms.CertID{Issuer: p.rsa.Cert.RawIssuer, Serial: p.rsa.Cert.SerialNumber}
	bySKI := cms.CertID{SubjectKeyID: p.rsa.Cert.SubjectKeyId}
	for _, tc := range []struct {
		name string
		id   cms.CertID
		want string
	}{
		{"issuer", byIssuer, "issuer CN=cms test CA,O=smimeproxy tests serial " + p.rsa.Cert.SerialNumber.Text(16)},
		{"ski", bySKI, "subject key id "},
	} {
		if got := tc.id.String(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("CertID(%s).String() = %q, want %q...", tc.name, got, tc.want)
		}
		if !tc.id.Matches(p.rsa.Cert) || tc.id.Matches(p.rsa2.Cert) || tc.id.Matches(nil) {
			t.Errorf("CertID(%s) does not match exactly its certificate", tc.name)
		}
	}
}

func TestIdentify(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want cms.Type
		ok   bool
	}{
		{"data indefinite", []byte{0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01, 0xa0, 0x80}, cms.TypeData, true},
		{"other", []byte{0x30, 0x05, 0x06, 0x03, 0x2a, 0x03, 0x04}, cms.TypeOther, true},
		{"empty", nil, cms.TypeOther, false},
		{"not a sequence", []byte{0x04, 0x00}, cms.TypeOther, false},
		{"truncated", []byte{0x30, 0x80, 0x06, 0x09, 0x2a}, cms.TypeOther, false},
	}
	for _, tc := range tests {
		got, err := cms.Identify(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("Identify(%s) = %v, %v, want %v (ok %v)", tc.name, got, err, tc.want, tc.ok)
		}
	}
}

// TestMalformedBER checks that BER the parser rejects comes back as a
// SyntaxError.
func TestMalformedBER(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"truncated", []byte{0x30, 0x80, 0x06, 0x09, 0x2a}},
		{"missing end-of-contents", []byte{0x30, 0x80, 0x06, 0x01, 0x2a}},
		{"deep", bytes.Repeat([]byte{0x30, 0x80}, 100)},
	}
	for _, tc := range tests {
		if _, err := cms.ParseSignedData(tc.in); !isSyntaxError(err) {
			t.Errorf("ParseSignedData(%s) = %v, want a SyntaxError", tc.name, err)
		}
		if _, err := cms.ParseEnvelope(tc.in); !isSyntaxError(err) {
			t.Errorf("ParseEnvelope(%s) = %v, want a SyntaxError", tc.name, err)
		}
	}
	// Identify reads no further than the content type.
	if _, err := cms.Identify(tests[1].in); !isSyntaxError(err) {
		t.Errorf("Identify(truncated) = %v, want a SyntaxError", err)
	}
}

func isSyntaxError(err error) bool {
	_, ok := errors.AsType[*cms.SyntaxError](err)
	return ok
}

// TestHostile: CMS nested 100,000 levels deep or claiming lengths of 2 GB
// and more is refused as malformed by every parser, after bounded work.
func TestHostile(t *testing.T) {
	inputs := map[string][]byte{
		"ber nested 100,000 levels": hostile.DeepBER(100000),
		"length of 4 GB":            {0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x06, 0x09},
		"length in 8 octets":        {0x30, 0x88, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x05, 0x00},
		"inner length of 2 GB": {0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03,
			0xa0, 0x80, 0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00},
	}
	var syntax *cms.SyntaxError
	for name, in := range inputs {
		if _, err := cms.ParseSignedData(in); !errors.As(err, &syntax) {
			t.Errorf("ParseSignedData(%s) = %v, want a syntax error", name, err)
		}
		if _, err := cms.ParseEnvelope(in); !errors.As(err, &syntax) {
			t.Errorf("ParseEnvelope(%s) = %v, want a syntax error", name, err)
		}
	}
	if typ, err := cms.Identify(hostile.DeepBER(100000)); err != nil || typ != cms.TypeEnvelopedData {
		t.Errorf("Identify reads only the content type: %v, %v", typ, err)
	}
}
