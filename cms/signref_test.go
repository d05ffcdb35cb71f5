package cms

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"smimeproxy/internal/testpki"
)

// signReference is Sign as it was written with a DER builder, which
// TestSignDER holds the hand-written DER of Sign to.
func signReference(content []byte, cert *x509.Certificate, key crypto.Signer, opts *SignOptions) ([]byte, error) {
	if opts == nil {
		opts = &SignOptions{}
	}
	if cert == nil || key == nil {
		return nil, errors.New("cms: sign: no certificate or key")
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("cms: sign: the key does not belong to the certificate")
	}
	h := opts.Hash
	if h == 0 {
		h = crypto.SHA256
	}
	if _, ok := key.Public().(ed25519.PublicKey); ok {
		h = crypto.SHA512 // RFC 8419 3.1
	}
	digestOID, _ := oidForHash(h)
	if h != crypto.SHA256 && h != crypto.SHA384 && h != crypto.SHA512 {
		return nil, fmt.Errorf("cms: sign: unsupported hash %v; use SHA-256, SHA-384 or SHA-512", h)
	}
	sc, sigAlg, err := signingScheme(key.Public(), h, opts.PSS)
	if err != nil {
		return nil, fmt.Errorf("cms: sign: %w", err)
	}

	caps := opts.Capabilities
	if caps == nil {
		caps = DefaultCapabilities()
	}
	when := opts.SigningTime
	if when.IsZero() {
		when = time.Now()
	}
	attrs, err := signedAttrsReference(hashOf(h, content), when, caps, opts.EncryptionKeyPreference)
	if err != nil {
		return nil, err
	}
	// The signature covers the attributes tagged as a SET; the SignerInfo
	// carries them as [0] IMPLICIT.
	signed, err := build(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(attrs) })
	})
	if err != nil {
		return nil, fmt.Errorf("cms: sign: encode signed attributes: %w", err)
	}
	sig, err := sc.sign(key, signed)
	if err != nil {
		return nil, fmt.Errorf("cms: sign: %w", err)
	}

	certs := [][]byte{cert.Raw}
	for _, c := range opts.Certificates {
		if c != nil && !slices.ContainsFunc(certs, func(raw []byte) bool { return bytes.Equal(raw, c.Raw) }) {
			certs = append(certs, c.Raw)
		}
	}
	signerInfo, err := build(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(1)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				addIssuerAndSerial(b, certIDOf(cert, false))
			})
			addAlgorithm(b, digestOID, nil)
			b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) { b.AddBytes(attrs) })
			addAlgorithm(b, sigAlg.oid, sigAlg.params)
			b.AddASN1OctetString(sig)
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
					b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { addAlgorithm(b, digestOID, nil) })
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oidData)
						if !opts.Detached {
							b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) { b.AddASN1OctetString(content) })
						}
					})
					addSetOf(b, constructedTag(0), certs)
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

// signedAttrsReference builds the signed attributes of a new signature: the contents
// of their DER SET OF.
func signedAttrsReference(digest []byte, when time.Time, caps []Capability, pref *x509.Certificate) ([]byte, error) {
	var err error
	attr := func(oid asn1.ObjectIdentifier, value func(b *cryptobyte.Builder)) []byte {
		out, e := build(func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oid)
				b.AddASN1(cbasn1.SET, value)
			})
		})
		if e != nil {
			err = e
		}
		return out
	}
	when = when.UTC().Truncate(time.Second)
	attrs := [][]byte{
		attr(oidAttrContentType, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidData) }),
		attr(oidAttrMessageDigest, func(b *cryptobyte.Builder) { b.AddASN1OctetString(digest) }),
		attr(oidAttrSigningTime, func(b *cryptobyte.Builder) {
			// RFC 5652 11.3: UTCTime up to 2049, GeneralizedTime from 2050.
			if when.Year() >= 1950 && when.Year() < 2050 {
				b.AddASN1UTCTime(when)
			} else {
				b.AddASN1GeneralizedTime(when)
			}
		}),
	}
	if len(caps) > 0 {
		attrs = append(attrs, attr(oidAttrSMIMECapabilities, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, c := range caps {
					addAlgorithm(b, c.Algorithm, c.Parameters)
				}
			})
		}))
	}
	if pref != nil {
		id := certIDOf(pref, false)
		attrs = append(attrs,
			attr(oidAttrEncKeyPreference, func(b *cryptobyte.Builder) {
				b.AddASN1(constructedTag(0), func(b *cryptobyte.Builder) { addIssuerAndSerial(b, id) })
			}),
			// Outlook looks for Microsoft's own attribute.
			attr(oidAttrMSEncKeyPreference, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addIssuerAndSerial(b, id) })
			}),
		)
	}
	if err != nil {
		return nil, fmt.Errorf("cms: encode signed attributes: %w", err)
	}
	return setContents(attrs), nil
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
