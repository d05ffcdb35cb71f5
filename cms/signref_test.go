package cms

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"smimeproxy/internal/testpki"
)

// signReference is Sign as it was written with a DER builder, which
// TestSignDER holds the hand-written DER of Sign to.
func signReference(content []byte, cert *x509.Certificate, key crypto.Signer, opts *SignOptions) ([]byte, error) {
	s, err := sign(content, cert, key, opts)
	if err != nil {
		return nil, err
	}
	signerInfo, err := build(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(1)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				addIssuerAndSerial(b, certIDOf(cert, false))
			})
			addAlgorithm(b, s.digestOID, nil)
			b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) { b.AddBytes(s.attrs) })
			addAlgorithm(b, s.sigAlg.oid, s.sigAlg.params)
			b.AddASN1OctetString(s.sig)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("cms: sign: encode SignerInfo: %w", err)
	}
	out, err := build(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidSignedData)
			b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1Int64(1)
					b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { addAlgorithm(b, s.digestOID, nil) })
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oidData)
						if !opts.Detached {
							b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) { b.AddASN1OctetString(content) })
						}
					})
					addSetOf(b, constructedTag(0), s.certs)
					b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(signerInfo) })
				})
			})
		})
	})
	if err != nil {
		return nil, fmt.Errorf("cms: sign: encode SignedData: %w", err)
	}
	return out, nil
}

// TestSignDER: Sign writes its DER by hand; it must be what the builder
// wrote, byte for byte, for every shape of signature (RSA PKCS #1 v1.5 and
// Ed25519 signatures are deterministic, so whole messages compare).
func TestSignDER(t *testing.T) {
	ca := testpki.NewCA(t, "sign DER root")
	rsaID := ca.Issue(t, "alice@example.com", nil)
	enc := ca.Issue(t, "alice-enc@example.com", nil)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ed := ca.Issue(t, "carlos@example.com", &testpki.Options{PublicKey: edKey.Public()})
	ed.Key = edKey
	when := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	custom := []Capability{{Algorithm: oidAES128CBC}}
	for _, id := range []*testpki.Identity{rsaID, ed} {
		for _, n := range []int{0, 1, 100, 117, 118, 200, 255, 256, 65535, 65536, 1 << 20} {
			content := bytes.Repeat([]byte("x"), n)
			for i, opts := range []SignOptions{
				{Detached: true, SigningTime: when},
				{SigningTime: when},
				{SigningTime: time.Date(2051, 1, 1, 0, 0, 0, 0, time.UTC), Hash: crypto.SHA384},
				{Detached: true, SigningTime: when, Capabilities: custom, Hash: crypto.SHA512},
				{SigningTime: when, Capabilities: []Capability{}},
				{Detached: true, SigningTime: when, Certificates: append([]*x509.Certificate{enc.Cert, id.Cert}, id.Chain...), EncryptionKeyPreference: enc.Cert},
			} {
				got, err := Sign(content, id.Cert, id.Key, &opts)
				if err != nil {
					t.Fatal(err)
				}
				want, err := signReference(content, id.Cert, id.Key, &opts)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s, %d bytes, options %d: Sign wrote\n%x\nthe builder wrote\n%x", id.Cert.Subject, n, i, got, want)
				}
				if cap(got) != len(got) {
					t.Errorf("%s, %d bytes, options %d: %d bytes in a buffer of %d", id.Cert.Subject, n, i, len(got), cap(got))
				}
			}
		}
	}
}
