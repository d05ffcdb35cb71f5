package cms_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"smimeproxy/cms"
	"smimeproxy/internal/testutil"
)

// The interop corpus is read in place (see ../shared/interop/MANIFEST.md).

func readInterop(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testutil.InteropDir(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func interopCert(t *testing.T, rel string) *x509.Certificate {
	t.Helper()
	data := readInterop(t, rel)
	if block, _ := pem.Decode(data); block != nil {
		data = block.Bytes
	}
	cert, err := x509.ParseCertificate(data)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return cert
}

func interopKey(t *testing.T, rel string) crypto.PrivateKey {
	t.Helper()
	block, _ := pem.Decode(readInterop(t, rel))
	if block == nil {
		t.Fatalf("%s: no PEM block", rel)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return key
}

// pemCMS decodes the one PEM block of an OpenSSL test file.
func pemCMS(t *testing.T, rel string) []byte {
	t.Helper()
	block, _ := pem.Decode(readInterop(t, rel))
	if block == nil {
		t.Fatalf("%s: no PEM block", rel)
	}
	return block.Bytes
}

// base64Part decodes the base64 body of the MIME part whose header holds
// marker: enough for the single-part messages here, and a signature part.
func base64Part(t *testing.T, rel, marker string) []byte {
	t.Helper()
	text := strings.ReplaceAll(string(readInterop(t, rel)), "\r\n", "\n")
	i := strings.Index(text, marker)
	if i < 0 {
		t.Fatalf("%s: %q not found", rel, marker)
	}
	j := strings.Index(text[i:], "\n\n")
	if j < 0 {
		t.Fatalf("%s: no body after %q", rel, marker)
	}
	var b64 strings.Builder
	for _, line := range strings.Split(text[i+j+2:], "\n") {
		if line == "" || strings.HasPrefix(line, "--") {
			break
		}
		b64.WriteString(line)
	}
	der, err := base64.StdEncoding.DecodeString(b64.String())
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return der
}

const lampsContent = "This is some sample content."

func TestInteropExamplesCMSSigned(t *testing.T) {
	tests := []struct {
		file, cert string
		want       x509.SignatureAlgorithm
		hash       crypto.Hash
	}{
		{"signedByAliceRSA.p7m", "lamps-alice.crt", x509.SHA256WithRSA, crypto.SHA256},
		{"signedByAliceRSAPSS.p7m", "lamps-alice.crt", x509.SHA256WithRSAPSS, crypto.SHA256},
		{"signedByCarlosEd25519.p7m", "lamps-carlos.crt", x509.PureEd25519, crypto.SHA512},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			cert := interopCert(t, "examples-cms/certs-and-keys/"+tc.cert)
			sd, err := cms.ParseSignedData(readInterop(t, "examples-cms/binary-files/"+tc.file))
			if err != nil {
				t.Fatalf("ParseSignedData: %v", err)
			}
			if string(sd.Content) != lampsContent || len(sd.Signers) != 1 {
				t.Fatalf("content %q with %d signers", sd.Content, len(sd.Signers))
			}
			s := sd.Signers[0]
			if s.SignatureAlgorithm != tc.want || s.Hash != tc.hash {
				t.Errorf("algorithm %v/%v, want %v/%v", s.SignatureAlgorithm, s.Hash, tc.want, tc.hash)
			}
			if found := sd.FindCertificate(s, []*x509.Certificate{cert}); found == nil || !found.Equal(cert) {
				t.Errorf("FindCertificate = %v, want %s", found, tc.cert)
			}
			if err := sd.Verify(s, cert, nil); err != nil {
				t.Errorf("Verify: %v", err)
			}
			if err := sd.Verify(s, cert, []byte(lampsContent+".")); !errors.Is(err, cms.ErrSignature) {
				t.Errorf("Verify(other content) = %v, want ErrSignature", err)
			}
		})
	}
}

func TestInteropExamplesCMSEnveloped(t *testing.T) {
	bob := interopCert(t, "examples-cms/certs-and-keys/lamps-bob.encrypt.crt")
	bobKey := interopKey(t, "examples-cms/certs-and-keys/lamps-bob.decrypt.p8.pem")
	dana := interopCert(t, "examples-cms/certs-and-keys/lamps-dana.encrypt.crt")
	danaKey := interopKey(t, "examples-cms/certs-and-keys/lamps-dana.decrypt.p8.pem")

	env, err := cms.ParseEnvelope(readInterop(t, "examples-cms/binary-files/encryptedForBobRSAOaep.p7m"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := env.Decrypt(bob, bobKey); err != nil || string(got) != lampsContent {
		t.Errorf("RSA-OAEP: Decrypt = %q, %v", got, err)
	}

	// Bob by RSA-OAEP and Dana by X25519 key agreement (RFC 8418).
	env, err = cms.ParseEnvelope(readInterop(t, "examples-cms/binary-files/encryptedForBobAndDana.p7m"))
	if err != nil {
		t.Fatal(err)
	}
	kinds := []cms.RecipientKind{}
	for _, r := range env.Recipients {
		kinds = append(kinds, r.Kind)
	}
	if len(kinds) != 2 || kinds[0] != cms.KeyTransport || kinds[1] != cms.KeyAgreement {
		t.Errorf("recipient kinds = %v, want key transport and key agreement", kinds)
	}
	if got, err := env.Decrypt(bob, bobKey); err != nil || string(got) != lampsContent {
		t.Errorf("Bob: Decrypt = %q, %v", got, err)
	}
	if got, err := env.Decrypt(dana, danaKey); err != nil || string(got) != lampsContent {
		t.Errorf("Dana (X25519): Decrypt = %q, %v", got, err)
	}

	// And back: we encrypt to Dana's X25519 certificate.
	for _, c := range []cms.Cipher{cms.AES128CBC, cms.AES256GCM} {
		der, err := cms.Encrypt([]byte(lampsContent), []*x509.Certificate{dana, bob}, &cms.EncryptOptions{Cipher: c})
		if err != nil {
			t.Fatalf("Encrypt(%v) to Dana: %v", c, err)
		}
		if env, err = cms.ParseEnvelope(der); err != nil {
			t.Fatal(err)
		}
		if got, err := env.Decrypt(dana, danaKey); err != nil || string(got) != lampsContent {
			t.Errorf("Dana (X25519) %v: Decrypt of ours = %q, %v", c, got, err)
		}
	}

	env, err = cms.ParseEnvelope(readInterop(t, "examples-cms/binary-files/authEnvelopedForBobChaCha20Poly1305.p7m"))
	if err != nil {
		t.Fatal(err)
	}
	var unsupported *cms.UnsupportedError
	if _, err := env.Decrypt(bob, bobKey); !env.Authenticated || env.CipherKnown || env.Cipher != "chacha20-poly1305" || !errors.As(err, &unsupported) {
		t.Errorf("ChaCha20-Poly1305: authenticated %v, cipher %q (known %v), Decrypt error %v; want chacha20-poly1305 and an UnsupportedError",
			env.Authenticated, env.Cipher, env.CipherKnown, err)
	}
}

func TestInteropOpenSSLAuthEnveloped(t *testing.T) {
	keyID, _ := hex.DecodeString("C0FEE0")
	kek, _ := hex.DecodeString("000102030405060708090A0B0C0D0E0F")
	der := pemCMS(t, "openssl/authenveloped_attrs.pem")
	if der[1] != 0x80 {
		t.Fatal("the sample is no longer BER")
	}
	env, err := cms.ParseEnvelope(der)
	if err != nil {
		t.Fatal(err)
	}
	if !env.Authenticated || env.Cipher != cms.AES128GCM || len(env.Recipients) != 1 || env.Recipients[0].Kind != cms.KEK {
		t.Errorf("envelope = %+v, want AES-128-GCM to one KEK recipient", env)
	}
	if got, err := env.DecryptKEK(keyID, kek); err != nil || string(got) != "Hello AuthEnvelopedData world\n" {
		t.Errorf("DecryptKEK = %q, %v", got, err)
	}
	if _, err := env.DecryptKEK([]byte{1, 2, 3}, kek); !errors.Is(err, cms.ErrNoRecipient) {
		t.Errorf("DecryptKEK(other key id) = %v, want ErrNoRecipient", err)
	}

	// The same with one authenticated attribute changed.
	env, err = cms.ParseEnvelope(pemCMS(t, "openssl/bad_authenveloped_attrs.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := env.DecryptKEK(keyID, kek); !errors.Is(err, cms.ErrDecrypt) {
		t.Errorf("DecryptKEK(bad attributes) = %q, %v, want ErrDecrypt", got, err)
	}
}

func TestInteropEmptyDigestSet(t *testing.T) {
	der := base64Part(t, "openssl/pkcs7-empty-digest-set.eml", `filename="smime.p7s"`)
	sd, err := cms.ParseSignedData(der)
	if err != nil {
		t.Fatalf("ParseSignedData: %v", err)
	}
	if len(sd.Signers) != 1 {
		t.Fatalf("got %d signers, want 1", len(sd.Signers))
	}
	s := sd.Signers[0]
	cert := sd.FindCertificate(s, nil)
	if cert == nil {
		t.Fatal("signer certificate not found")
	}
	// digestAlgorithms only serves one-pass verifiers (RFC 5652 5.1 allows
	// zero entries): the signature itself is sound over the signed text.
	if err := sd.Verify(s, cert, []byte("This is the content to be signed.\r\n")); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if err := sd.Verify(s, cert, []byte("This is the content to be signed.\n")); !errors.Is(err, cms.ErrSignature) {
		t.Errorf("Verify(other content) = %v, want ErrSignature", err)
	}
}

func TestInteropGnuPGPassword(t *testing.T) {
	tests := []struct {
		file string
		want cms.Cipher
	}{
		{"pwri-sample.cbc.p7m", cms.AES256CBC},
		{"pwri-sample.cbc-2.p7m", cms.AES192CBC},
		{"pwri-sample.gcm.p7m", cms.AES256GCM},
	}
	for _, tc := range tests {
		env, err := cms.ParseEnvelope(readInterop(t, "gnupg/"+tc.file))
		if err != nil {
			t.Errorf("%s: ParseEnvelope: %v", tc.file, err)
			continue
		}
		if !env.CipherKnown || env.Cipher != tc.want || env.Authenticated != tc.want.AEAD() {
			t.Errorf("%s: cipher %v (known %v), want %v", tc.file, env.Cipher, env.CipherKnown, tc.want)
		}
		if len(env.Recipients) != 1 || env.Recipients[0].Kind != cms.Password {
			t.Errorf("%s: recipients %+v, want one Password recipient", tc.file, env.Recipients)
		}
	}
}

// TestInteropThunderbirdOpenSSL decrypts the messages OpenSSL made for
// Thunderbird's tests: OAEP variants and ECDH on P-384.
func TestInteropThunderbirdOpenSSL(t *testing.T) {
	const dir = "thunderbird/smime-interop/"
	tests := []struct {
		file, who string
		want      cms.Cipher
	}{
		{"fran-oaep_ossl.env", "Fran", cms.DES3CBC},
		{"fran-oaep-label_ossl.env", "Fran", cms.AES256CBC},
		{"fran-oaep-sha256hash_ossl.env", "Fran", cms.AES128CBC},
		{"fran-oaep-sha256hash-sha256mgf_ossl.env", "Fran", cms.AES256CBC},
		{"fran-ec_ossl-aes128-sha256.env", "Fran-ec", cms.AES128CBC},
		{"fran-ec_ossl-aes256-sha512.env", "Fran-ec", cms.AES256CBC},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			cert := interopCert(t, "thunderbird/derived-pem/"+tc.who+".cert.pem")
			key := interopKey(t, "thunderbird/derived-pem/"+tc.who+".key.pem")
			env, err := cms.ParseEnvelope(base64Part(t, dir+tc.file, "Content-Transfer-Encoding: base64"))
			if err != nil {
				t.Fatalf("ParseEnvelope: %v", err)
			}
			if env.Cipher != tc.want {
				t.Errorf("cipher %v, want %v", env.Cipher, tc.want)
			}
			got, err := env.Decrypt(cert, key)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Contains(got, []byte("This is a test message to Fran.")) {
				t.Errorf("Decrypt = %q, want the test message", got)
			}
		})
	}
}
