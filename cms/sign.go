package cms

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/asn1"
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
	s, err := sign(content, cert, key, opts)
	if err != nil {
		return nil, err
	}
	certsLen := 0
	for _, c := range s.certs {
		certsLen += len(c)
	}
	ias, err := build(func(b *cryptobyte.Builder) { addIssuerAndSerial(b, certIDOf(cert, false)) })
	if err != nil {
		return nil, fmt.Errorf("cms: sign: encode SignerInfo: %w", err)
	}
	digestAlg, err := build(func(b *cryptobyte.Builder) { addAlgorithm(b, s.digestOID, nil) })
	if err != nil {
		return nil, fmt.Errorf("cms: sign: encode SignerInfo: %w", err)
	}
	sigAlgDER, err := build(func(b *cryptobyte.Builder) { addAlgorithm(b, s.sigAlg.oid, s.sigAlg.params) })
	if err != nil {
		return nil, fmt.Errorf("cms: sign: encode SignerInfo: %w", err)
	}

	// The SignedData is written by hand into a buffer of its exact size:
	// a builder would copy an encapsulated content once per level.
	version1 := []byte{0x02, 0x01, 0x01} // INTEGER 1
	siLen := len(version1) + elementLen(len(ias)) + len(digestAlg) + elementLen(len(s.attrs)) + len(sigAlgDER) + elementLen(len(s.sig))
	eciLen := len(derOIDData)
	if !opts.Detached {
		eciLen += elementLen(elementLen(len(content)))
	}
	sdLen := len(version1) + elementLen(len(digestAlg)) + elementLen(eciLen) + elementLen(certsLen) + elementLen(elementLen(siLen))
	ciLen := len(derOIDSignedData) + elementLen(elementLen(sdLen))

	out := make([]byte, 0, elementLen(ciLen))
	out = appendHeader(out, cbasn1.SEQUENCE, ciLen)
	out = append(out, derOIDSignedData...)
	out = appendHeader(out, constructedTag(0), elementLen(sdLen))
	out = appendHeader(out, cbasn1.SEQUENCE, sdLen)
	out = append(out, version1...)
	out = appendHeader(out, cbasn1.SET, len(digestAlg))
	out = append(out, digestAlg...)
	out = appendHeader(out, cbasn1.SEQUENCE, eciLen)
	out = append(out, derOIDData...)
	if !opts.Detached {
		out = appendHeader(out, constructedTag(0), elementLen(len(content)))
		out = appendHeader(out, cbasn1.OCTET_STRING, len(content))
		out = append(out, content...)
	}
	out = appendHeader(out, constructedTag(0), certsLen)
	for _, c := range s.certs {
		out = append(out, c...)
	}
	out = appendHeader(out, cbasn1.SET, elementLen(siLen))
	out = appendHeader(out, cbasn1.SEQUENCE, siLen)
	out = append(out, version1...)
	out = appendHeader(out, cbasn1.SEQUENCE, len(ias))
	out = append(out, ias...)
	out = append(out, digestAlg...)
	out = appendHeader(out, constructedTag(0), len(s.attrs))
	out = append(out, s.attrs...)
	out = append(out, sigAlgDER...)
	out = appendHeader(out, cbasn1.OCTET_STRING, len(s.sig))
	return append(out, s.sig...), nil
}

// signature is what a SignedData carries besides its content, made.
type signature struct {
	digestOID asn1.ObjectIdentifier
	sigAlg    algorithm
	attrs     []byte   // the signed attributes: the contents of their SET OF
	sig       []byte   // over attrs tagged as a SET
	certs     [][]byte // cert and opts.Certificates, once each, in DER order
}

// sign checks the arguments of Sign, chooses the digest and the scheme,
// and signs the attributes over content's digest.
func sign(content []byte, cert *x509.Certificate, key crypto.Signer, opts *SignOptions) (*signature, error) {
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

	capsAttr, err := capabilitiesAttr(opts.Capabilities)
	if err != nil {
		return nil, err
	}
	when := opts.SigningTime
	if when.IsZero() {
		when = time.Now()
	}
	attrs, err := signedAttrs(hashOf(h, content), when, capsAttr, opts.EncryptionKeyPreference)
	if err != nil {
		return nil, err
	}
	// The signature covers the attributes tagged as a SET; the SignerInfo
	// carries them as [0] IMPLICIT.
	signed := appendHeader(make([]byte, 0, elementLen(len(attrs))), cbasn1.SET, len(attrs))
	sig, err := sc.sign(key, append(signed, attrs...))
	if err != nil {
		return nil, fmt.Errorf("cms: sign: %w", err)
	}

	certs := [][]byte{cert.Raw}
	for _, c := range opts.Certificates {
		if c != nil && !slices.ContainsFunc(certs, func(raw []byte) bool { return bytes.Equal(raw, c.Raw) }) {
			certs = append(certs, c.Raw)
		}
	}
	slices.SortFunc(certs, bytes.Compare) // a SET OF, in DER order
	return &signature{digestOID: digestOID, sigAlg: sigAlg, attrs: attrs, sig: sig, certs: certs}, nil
}
