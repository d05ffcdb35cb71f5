package cms

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Sign makes a SignedData ContentInfo (DER) over content (id-data), signed by
// key, whose certificate is cert. Ed25519 keys always digest with SHA-512
// (RFC 8419).
func Sign(content []byte, cert *x509.Certificate, key crypto.Signer, opts *SignOptions) ([]byte, error) {
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
	attrs, err := signedAttrs(hashOf(h, content), when, caps, opts.EncryptionKeyPreference)
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
