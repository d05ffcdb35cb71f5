package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"testing"

	"golang.org/x/crypto/cryptobyte"

	"smimeproxy/internal/testpki"
)

// TestKeyWrapNULLParameters decrypts a message whose key wrap
// AlgorithmIdentifier has NULL parameters, the way NSS 3.100 and later
// write it and derive the key-encryption key from it, for every key wrap a
// cipher of ours pairs with and every curve.
func TestKeyWrapNULLParameters(t *testing.T) {
	ca := testpki.NewCA(t, "CA")
	content := []byte("Content-Type: text/plain\r\n\r\nfrom NSS\r\n")
	for _, curve := range []string{"p256", "p384", "p521"} {
		id := ca.Issue(t, curve+"@example.com", &testpki.Options{Key: curve})
		pub, err := id.Cert.PublicKey.(*ecdsa.PublicKey).ECDH()
		if err != nil {
			t.Fatal(err)
		}
		for _, ci := range ciphers {
			if ci.wrap == nil {
				continue
			}
			null, err := build(func(b *cryptobyte.Builder) { addAlgorithm(b, ci.wrap, nullParams) })
			if err != nil {
				t.Fatal(err)
			}
			cek := make([]byte, ci.keyLen)
			rand.Read(cek)
			info, err := keyAgreementWith(pub, certIDOf(id.Cert, false), cek, null)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(info, null) {
				t.Fatalf("%s %s: the recipient info does not carry the NULL parameters", curve, ci.cipher)
			}
			der, err := envelope(ci, cek, content, 2, [][]byte{info})
			if err != nil {
				t.Fatal(err)
			}
			env, err := ParseEnvelope(der)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := env.Decrypt(id.Cert, id.Key); err != nil || !bytes.Equal(got, content) {
				t.Errorf("%s %s: Decrypt with NULL key wrap parameters = %q, %v", curve, ci.cipher, got, err)
			}
		}
	}

	// The two encodings give different keys: deriving from absent
	// parameters, as before, cannot read these messages.
	z := bytes.Repeat([]byte{7}, 32)
	absent, _ := build(func(b *cryptobyte.Builder) { addAlgorithm(b, oidAES256Wrap, nil) })
	null, _ := build(func(b *cryptobyte.Builder) { addAlgorithm(b, oidAES256Wrap, nullParams) })
	k1, err1 := deriveKEK(crypto.SHA256, false, z, absent, nil, 32)
	k2, err2 := deriveKEK(crypto.SHA256, false, z, null, nil, 32)
	if err := errors.Join(err1, err2); err != nil || bytes.Equal(k1, k2) {
		t.Errorf("KEKs from absent and NULL parameters: equal %v, %v; want different keys", bytes.Equal(k1, k2), err)
	}
}

// TestKeyWrapOtherParameters refuses key wrap parameters other than absent
// or NULL: no key wrap defines any.
func TestKeyWrapOtherParameters(t *testing.T) {
	ca := testpki.NewCA(t, "CA")
	id := ca.Issue(t, "p256@example.com", &testpki.Options{Key: "p256"})
	pub, err := id.Cert.PublicKey.(*ecdsa.PublicKey).ECDH()
	if err != nil {
		t.Fatal(err)
	}
	ci, _ := AES128CBC.info()
	odd, err := build(func(b *cryptobyte.Builder) { addAlgorithm(b, ci.wrap, []byte{0x04, 0x01, 0x00}) })
	if err != nil {
		t.Fatal(err)
	}
	cek := make([]byte, ci.keyLen)
	info, err := keyAgreementWith(pub, certIDOf(id.Cert, false), cek, odd)
	if err != nil {
		t.Fatal(err)
	}
	der, err := envelope(ci, cek, []byte("x"), 2, [][]byte{info})
	if err != nil {
		t.Fatal(err)
	}
	env, err := ParseEnvelope(der)
	if err != nil {
		t.Fatal(err)
	}
	var syntax *SyntaxError
	if _, err := env.Decrypt(id.Cert, id.Key); !errors.As(err, &syntax) {
		t.Errorf("Decrypt with OCTET STRING key wrap parameters = %v, want a SyntaxError", err)
	}
}
